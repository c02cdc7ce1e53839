"""What shard hashes cost: writing MDS shards with no hash, xxh64 (what convert-dataset writes) or sha1, and
verifying xxh64 on first read (what the trainer does) against reading every sample once.

    .venv/bin/python scripts/bench/integrity.py [--mb 128]

Prints ratios against the no-hash write and against one pass over the samples, measured in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def write(out: Path, tokens: np.ndarray, seq: int, hashes: list[str]) -> float:
    from streaming import MDSWriter

    start = time.perf_counter()
    with MDSWriter(out=str(out), columns={"tokens": "ndarray:int32"}, hashes=hashes, size_limit=1 << 26,
                   progress_bar=False) as writer:
        for row in tokens.reshape(-1, seq):
            writer.write({"tokens": row})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=128, help="size of the token data")
    parser.add_argument("--seq", type=int, default=2048)
    args = parser.parse_args()
    tokens = np.random.default_rng(0).integers(0, 50_000, size=args.mb * 2**20 // 4, dtype=np.int32)
    tokens = tokens[: len(tokens) // args.seq * args.seq]
    root = Path(tempfile.mkdtemp(prefix="bench-integrity-"))
    try:
        times: dict[str, float] = {}
        for _ in range(3):  # interleaved repeats, best of three: the machine's load moves in between
            for name, hashes in (("none", []), ("xxh64", ["xxh64"]), ("sha1", ["sha1"])):
                shutil.rmtree(root / name, ignore_errors=True)
                seconds = write(root / name, tokens, args.seq, hashes)
                times[name] = min(times.get(name, seconds), seconds)
        for name, seconds in times.items():
            print(f"write {args.mb} MB, hashes={name:5s}: {seconds:6.2f} s  ({seconds / times['none']:.2f}x no hash)")
        from llmfoundry.data.integrity import CheckedStreamingDataset
        from streaming import StreamingDataset

        plain = StreamingDataset(local=str(root / "xxh64"), batch_size=8, num_canonical_nodes=1)
        start = time.perf_counter()
        for i in range(len(plain)):
            plain[i]
        read = time.perf_counter() - start
        checked_data = CheckedStreamingDataset(local=str(root / "xxh64"), batch_size=8, num_canonical_nodes=1)
        start = time.perf_counter()
        for shard_id in range(len(checked_data.shards)):
            checked_data._verify(shard_id)
        verify = time.perf_counter() - start
        print(f"read every sample once: {read:6.2f} s; verify every shard's xxh64 once: {verify:6.2f} s "
              f"({verify / read:.2f}x one pass over the samples)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
