"""Rows held in memory, served with the same order and resume protocol as the streaming pretraining data.

Finetuning and classification sets are small enough to tokenize once at start-up, which also makes exact
statistics (truncated/skipped counts, packing) possible before training. The trainer's StepBatches drives this
like a StreamingDataset: `len()` is the per-rank sample count, `size` the global one, and
`load_state_dict({"epoch", "sample_in_epoch"})` positions the next pass. Row i of an epoch's (seeded) order
goes to rank i % world_size, so each optimizer step sees the same global set of rows for any number of ranks,
and a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info


class RowDataset(IterableDataset):
    """Rows (dicts of numpy arrays or numbers) in a per-epoch seeded order, split across ranks and workers."""

    def __init__(self, rows: list[dict[str, Any]], *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                 batch_size: int = 1) -> None:
        self.rows = rows
        self.shuffle, self.seed = shuffle, seed
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.epoch, self.start = 0, 0

    @property
    def size(self) -> int:
        return len(self.rows)

    def __len__(self) -> int:
        return len(self.rows) // self.world_size

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Start the next pass at global row `sample_in_epoch` of epoch `epoch`."""
        self.epoch, self.start = state["epoch"], state["sample_in_epoch"]

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.rows))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = self.order(self.epoch)
        usable = len(self) * self.world_size
        mine = order[self.start + self.rank : usable : self.world_size]
        info = get_worker_info()
        for k, index in enumerate(mine):
            # With workers, whole batches alternate between them, so the DataLoader's round-robin over
            # workers reproduces the single-process order.
            if info is None or (k // self.batch_size) % info.num_workers == info.id:
                yield self.rows[index]
