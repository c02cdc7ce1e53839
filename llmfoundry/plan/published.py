"""LLM Foundry's published training throughput (mosaicml/llm-foundry, scripts/train/benchmarking/README.md).

Rows at sequence length 2048, amp_bf16, FSDP FULL_SHARD, the configuration of each size with the most GPUs up to
8 (70B: its smallest published count). `foundry plan`'s formulas reproduce their tokens/s from their MFU
(scripts/bench/plan.py prints the table; tests/unit/test_plan.py checks the parameter counts).
Their benchmark models are their `mpt-*.yaml` shapes: learned positions, biases, vocabulary 50368 (unpadded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PublishedRun:
    model: str
    d_model: int
    n_heads: int
    n_layers: int
    gpus: int
    gpu: str
    """Our --gpu name for their GPU column (a100_80gb, h100_80gb)."""
    mfu: float
    """Their MFU, as a fraction."""
    activation_checkpointing: bool
    parameters: int
    """Their NumParams column."""
    tokens_per_s: int
    """Their Throughput (T/s) column, all GPUs together."""

    def model_config(self) -> dict[str, Any]:
        """Their yaml's model block, as our mpt config."""
        return {"name": "mpt", "d_model": self.d_model, "n_heads": self.n_heads, "n_layers": self.n_layers,
                "max_seq_len": 2048, "vocab_size": 50368, "pad_vocab_multiple": 1, "attn_config": {"alibi": False}}


RUNS = [PublishedRun(*row) for row in (
    ("mpt-125m", 768, 12, 12, 8, "a100-80g", 0.4479, False, 125311488, 1142641),
    ("mpt-350m", 1024, 16, 24, 8, "a100-80g", 0.5162, False, 355985408, 470263),
    ("mpt-760m", 1536, 12, 24, 8, "a100-80g", 0.5685, False, 760470528, 259472),
    ("mpt-1b", 2048, 16, 24, 8, "a100-80g", 0.5986, False, 1315950592, 164109),
    ("mpt-3b", 2560, 20, 32, 8, "a100-80g", 0.6211, False, 2651837440, 86491),
    ("mpt-7b", 4096, 32, 32, 8, "a100-80g", 0.6423, False, 6658859008, 37130),
    ("mpt-13b", 5120, 40, 40, 8, "a100-80g", 0.5957, False, 12853954560, 18097),
    ("mpt-30b", 7168, 64, 48, 8, "a100-80g", 0.5530, True, 29975214080, 7330),
    ("mpt-70b", 8192, 64, 80, 32, "a100-80g", 0.4856, True, 64862437376, 11962),
    ("mpt-760m", 1536, 12, 24, 8, "h100", 0.3490, False, 760470528, 505177),
    ("mpt-1b", 2048, 16, 24, 8, "h100", 0.4182, False, 1315950592, 363645),
    ("mpt-7b", 4096, 32, 32, 8, "h100", 0.4644, False, 6658859008, 85144),
    ("mpt-13b", 5120, 40, 40, 8, "h100", 0.3979, False, 12853954560, 38336),
    ("mpt-30b", 7168, 64, 48, 8, "h100", 0.3811, True, 29975214080, 16022),
    ("mpt-70b", 8192, 64, 80, 64, "h100", 0.4257, True, 64862437376, 66523),
)]
