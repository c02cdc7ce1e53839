"""Jobs starting side by side on one machine each get their own streaming shared-memory prefix.

Without the lock (llmfoundry/data/registration.py), processes that build a dataset at the same instant pick
the same free prefix and all but one die with FileExistsError on `/NNNNNN_locals`.
"""

import multiprocessing as mp
from pathlib import Path

import numpy as np


def _build(local: str, start, done) -> None:
    from llmfoundry.data.integrity import CheckedStreamingDataset

    start.wait()
    try:
        dataset = CheckedStreamingDataset(local=local, batch_size=2, num_canonical_nodes=1)
        done.put(("ok", len(dataset)))
        start.wait()  # hold the prefix until every process has registered, as a training job would
        del dataset  # releases its shared memory
    except Exception as err:  # noqa: BLE001 - reported to the parent, which asserts on it
        done.put(("error", repr(err)))
        start.wait()


def test_side_by_side_jobs_register_distinct_prefixes(tmp_path: Path) -> None:
    from streaming import MDSWriter

    import llmfoundry.data.integrity  # noqa: F401 - imported once here; the forked jobs race only on registering

    with MDSWriter(out=str(tmp_path / "mds"), columns={"tokens": "ndarray:int32"}, hashes=["xxh64"]) as writer:
        for _ in range(8):
            writer.write({"tokens": np.arange(16, dtype=np.int32)})
    ctx = mp.get_context("fork")
    jobs = 6
    for round_ in range(4):
        start, done = ctx.Barrier(jobs), ctx.Queue()
        procs = [ctx.Process(target=_build, args=(str(tmp_path / "mds"), start, done)) for _ in range(jobs)]
        for p in procs:
            p.start()
        results = [done.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert results == [("ok", 8)] * jobs, f"round {round_}: {results}"
