"""Run untrusted generated Python (code_evaluation) in a contained process.

Each program runs in a fresh interpreter (`python -I`: no site packages, no PYTHON* variables) with:
- no network: a new network namespace (`unshare -rn`, or `unshare -n` as root), holding only a down loopback;
- no new processes: a seccomp filter makes fork/vfork/clone/clone3 fail with EPERM (installed with ctypes:
  RLIMIT_NPROC alone does not bind root, and a fork bomb must not reach the shared machine's pid table);
- no writes outside its temporary directory: a Landlock ruleset (Linux >= 5.13) allows file creation,
  writing, truncation and removal only beneath that directory; reading stays allowed (the interpreter needs
  its standard library) but nothing can leave the machine;
- resource limits (setrlimit): CPU seconds, address space, file size, open files, no core dumps;
- a wall-clock limit enforced by the parent, which kills the whole process group;
- an empty environment (HOME and TMPDIR are the temporary directory, which is also the working directory).
Where a layer is unavailable (no `unshare`, no Landlock, an unknown CPU architecture) nothing runs and the
error says what is missing. The result line carries a per-run nonce; containment, not forgery resistance, is
the goal (as in HumanEval's own harness, code that wants to fake a pass can).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llmfoundry.errors import UserError

# The contained interpreter runs this first: it installs Landlock and seccomp on itself, then runs the program
# and its tests, and prints one line `NONCE json` with the outcome of each test.
BOOTSTRAP = r'''
import ctypes, json, os, signal, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
def fail(what):
    print(sys.argv[1], json.dumps({"setup": what}), flush=True); os._exit(3)
abi = libc.syscall(444, None, 0, 1)
if abi < 1:
    fail("Landlock is not available in this kernel")
rights = (1 << 1) | sum(1 << b for b in range(4, 13)) | ((1 << 13) if abi >= 2 else 0) | ((1 << 14) if abi >= 3 else 0)
attr = struct.pack("Q", rights)
ruleset = libc.syscall(444, ctypes.c_char_p(attr), len(attr), 0)
fd = os.open(".", os.O_PATH | os.O_DIRECTORY)
rule = struct.pack("=Qi", rights, fd)
if ruleset < 0 or libc.syscall(445, ruleset, 1, ctypes.c_char_p(rule), 0) != 0:
    fail("cannot build the Landlock ruleset")
if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.syscall(446, ruleset, 0) != 0:
    fail("cannot apply the Landlock ruleset")
arch, banned, x32 = json.loads(sys.argv[2])
deny = 4 + len(banned) + x32
prog = [(0x20, 0, 0, 4), (0x15, 0, deny - 2, arch), (0x20, 0, 0, 0)]
if x32:
    prog.append((0x35, deny - 4, 0, 0x40000000))
for nr in banned:
    prog.append((0x15, deny - len(prog) - 1, 0, nr))
prog += [(0x06, 0, 0, 0x7FFF0000), (0x06, 0, 0, 0x00050000 | 1)]
filt = b"".join(struct.pack("HBBI", *ins) for ins in prog)
buf = ctypes.create_string_buffer(filt)
fprog = struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(buf))
if libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) != 0:
    fail("cannot install the seccomp filter")
spec = json.loads(open("tests.json").read())
results = []
def alarm(*_):
    raise TimeoutError()
signal.signal(signal.SIGALRM, alarm)
space = {"__name__": "__sandbox__"}
try:
    signal.alarm(spec["timeout"])
    exec(compile(open("program.py").read(), "program.py", "exec"), space)
    signal.alarm(0)
    fn = space[spec["entry_point"]]
except BaseException as err:
    print(sys.argv[1], json.dumps({"error": type(err).__name__, "passed": [False] * len(spec["tests"])}), flush=True)
    os._exit(0)
for given, expected in spec["tests"]:
    try:
        signal.alarm(spec["timeout"])
        got = fn(*eval(given))
        signal.alarm(0)
        try:
            want = eval(expected)
        except BaseException:
            want = expected
        results.append(bool(got == want))
    except BaseException:
        signal.alarm(0)
        results.append(False)
print(sys.argv[1], json.dumps({"passed": results}), flush=True)
os._exit(0)
'''

# audit arch, process-creating syscalls, whether x32 numbers (>= 0x40000000) must be refused too
SECCOMP_ARCH = {"x86_64": (0xC000003E, [56, 57, 58, 435], 1), "aarch64": (0xC00000B7, [220, 435], 0)}


@dataclass
class Limits:
    timeout_s: int = 5
    """Per program and per test case (Composer's local evaluator uses 5 s)."""
    memory_mb: int = 1024
    """Address-space limit."""
    file_mb: int = 16
    """Largest file the program may write (in its temporary directory)."""


@dataclass
class Outcome:
    passed: list[bool]
    """One per test case."""
    reason: str = ""
    """Why the program failed as a whole (timeout, killed, exception name), if it did."""


@lru_cache(maxsize=1)
def _unshare() -> list[str]:
    """The command prefix that puts a process in a new network namespace, after checking that it works."""
    tool = shutil.which("unshare")
    if tool is None:
        raise UserError("code_evaluation runs generated code without network access through `unshare` "
                        "(util-linux), which is not installed here; install it or drop the code tasks")
    candidates = [[tool, "-rn"]] + ([[tool, "-n"]] if os.geteuid() == 0 else [])
    for prefix in candidates:
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    raise UserError("code_evaluation needs a network namespace for generated code, and `unshare -rn` fails here "
                    "(unprivileged user namespaces disabled?); enable them or drop the code tasks")


def _arch() -> str:
    arch = json.dumps(SECCOMP_ARCH.get(platform.machine()) or [])
    if arch == "[]" or sys.platform != "linux":
        raise UserError(f"code_evaluation's sandbox supports Linux on x86_64 and aarch64, not "
                        f"{sys.platform}/{platform.machine()}")
    return arch


def _limits(limits: Limits, n_tests: int) -> None:
    cpu = limits.timeout_s * (n_tests + 1) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb << 20, limits.memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb << 20, limits.file_mb << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_python(program: str, entry_point: str, tests: list[tuple[str, str]], limits: Limits | None = None) -> Outcome:
    """Run `program`, then call `entry_point(*eval(input))` for each test and compare with `eval(output)`."""
    limits = limits or Limits()
    prefix, arch = _unshare(), _arch()
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="foundry-sandbox-") as tmp:
        Path(tmp, "program.py").write_text(program)
        Path(tmp, "tests.json").write_text(json.dumps({"entry_point": entry_point, "tests": tests,
                                                        "timeout": limits.timeout_s}))
        env = {"HOME": tmp, "TMPDIR": tmp, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        proc = subprocess.Popen([*prefix, sys.executable, "-I", "-c", BOOTSTRAP, nonce, arch], cwd=tmp, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=lambda: _limits(limits, len(tests)))
        try:
            out, _ = proc.communicate(timeout=limits.timeout_s * (len(tests) + 1) + 5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return Outcome([False] * len(tests), "timeout")
    for line in reversed(out.decode("utf-8", "replace").splitlines()):
        if line.startswith(nonce + " "):
            result = json.loads(line[len(nonce) + 1:])
            if "setup" in result:
                raise UserError(f"code_evaluation sandbox: {result['setup']}; generated code is never run "
                                "without it")
            return Outcome(result["passed"], result.get("error", ""))
    return Outcome([False] * len(tests), f"exit {proc.returncode}")
