"""This process's resident memory, read from /proc (Linux).

The peak is VmHWM, the high-water mark of this process's own address space. `getrusage().ru_maxrss` is not
used: Linux carries it over exec from the parent's size at fork, so a worker started by a large parent (a
torchrun agent, a test runner) reports the parent's memory as its own.
"""

from __future__ import annotations

import os


def rss_bytes() -> int:
    """Resident set size now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The largest resident set size this process has had since it started (or exec'd)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
