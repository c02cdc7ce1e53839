"""A machine-wide lock around mosaicml-streaming's shared-memory registration.

StreamingDataset picks its shared-memory prefix by scanning /dev/shm for a free number and then creating
`/NNNNNN_locals`, with nothing between the two steps: two jobs on one machine that start together (two
`foundry train` runs side by side, as experiment (b) does) can pick the same number, and one dies with
`FileExistsError: '/000407_locals'` (5 of 25 side-by-side starts of experiment (b) before this lock).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

LOCK = os.path.join(tempfile.gettempdir(), "llmfoundry-streaming-prefix.lock")


@contextmanager
def registration_lock(is_local_leader: bool) -> Iterator[None]:
    """Held by each job's local leader (the one rank per machine that creates the prefix) across the dataset's
    construction. Other ranks only look the prefix up; they must not wait on the lock, since streaming holds
    them at a barrier with their leader between the scan and the creation."""
    if not is_local_leader:
        yield
        return
    fd = os.open(LOCK, os.O_RDONLY | os.O_CREAT, 0o666)  # read-only: any user may share one lock file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
