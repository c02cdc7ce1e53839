"""code_evaluation: the sandbox contains what generated code may try, real HumanEval solutions pass, pass@k is
the unbiased estimator."""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
from pathlib import Path

import pytest

from llmfoundry.eval.code_tasks import completion, pass_at_k, passes
from llmfoundry.eval.sandbox import Limits, run_python

FAST = Limits(timeout_s=2)


def ran(body: str, expected: str) -> bool:
    """Run `def f():` with `body` in the sandbox; True when it returned eval(expected)."""
    program = "import errno, os, socket, subprocess, signal\ndef f():\n" + "".join(f"    {line}\n" for line in body.splitlines())
    return run_python(program, "f", [("()", expected)], FAST).passed == [True]


def test_a_correct_solution_passes_and_a_wrong_one_fails():
    assert run_python("def add(a, b):\n    return a + b\n", "add", [("(1, 2)", "3"), ("('a', 'b')", "'ab'")], FAST).passed \
        == [True, True]
    assert run_python("def add(a, b):\n    return a - b\n", "add", [("(1, 2)", "3")], FAST).passed == [False]


def test_infinite_loops_are_stopped():
    assert run_python("def f():\n    while True:\n        pass\n", "f", [("()", "1")], FAST).passed == [False]
    # the program ignores the alarm: the wall-clock limit kills its process group
    out = run_python("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ndef f():\n    while True:\n        pass\n",
                     "f", [("()", "1")], FAST)
    assert out.passed == [False] and out.reason in ("timeout", "exit -24", "exit -9")


def test_no_new_processes_a_fork_bomb_stops_at_the_first_fork():
    assert ran("try:\n    os.fork()\nexcept OSError as e:\n    return e.errno", str(errno.EPERM))
    assert ran("try:\n    subprocess.run(['true'])\nexcept OSError as e:\n    return e.errno", str(errno.EPERM))
    bomb = "n = 0\nwhile True:\n    try:\n        os.fork()\n        n += 1\n    except OSError:\n        return n"
    assert ran(bomb, "0")


def test_no_writes_outside_the_temporary_directory(tmp_path):
    target = tmp_path / "outside.txt"
    assert ran(f"try:\n    open({str(target)!r}, 'w')\nexcept OSError as e:\n    return e.errno", str(errno.EACCES))
    assert not target.exists()
    assert ran(f"try:\n    os.remove({str(Path(__file__))!r})\nexcept OSError as e:\n    return e.errno", str(errno.EACCES))
    assert ran("open('scratch.txt', 'w').write('x')\nreturn open('scratch.txt').read() + os.getcwd()[:5]", "'x/tmp/'")


def test_no_network_and_no_environment():
    assert ran("try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\nexcept OSError as e:\n    return e.errno",
               str(errno.ENETUNREACH))
    os.environ["FOUNDRY_SECRET_FOR_TEST"] = "x"
    try:
        assert ran("return 'FOUNDRY_SECRET_FOR_TEST' in os.environ or os.environ['HOME'] != os.getcwd()", "False")
    finally:
        del os.environ["FOUNDRY_SECRET_FOR_TEST"]


def test_memory_is_limited():
    assert ran("try:\n    b = bytearray(4 << 30)\nexcept MemoryError:\n    return 'limited'", "'limited'")


@pytest.mark.foundry_files
def test_humaneval_canonical_solutions_pass(shared_dir):
    lines = (shared_dir / "foundry-v0.21" / "local_data" / "programming" / "human_eval.jsonl").read_text().splitlines()
    items = [json.loads(line) for line in lines[:3]]
    for item in items:
        assert passes(item, item["canonical_solution"] + "\ndef unrelated():\n    pass\n")  # cut at the next def
        assert not passes(item, "    return None\n")
    assert completion("    return 1\n\nprint('x')") == "    return 1\n"


def test_pass_at_k_is_the_unbiased_estimator():
    """Against its definition: the chance that k samples drawn without replacement include a passing one."""
    for n, c, k in [(5, 0, 1), (5, 2, 1), (5, 2, 3), (10, 3, 5), (4, 4, 2), (6, 1, 6)]:
        draws = list(itertools.combinations([True] * c + [False] * (n - c), k))
        exact = sum(any(d) for d in draws) / len(draws)
        assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)
