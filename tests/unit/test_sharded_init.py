"""Sharded initialization gives bitwise the weights of `init_weights` on the whole model.

The 2-process training test covers the real multi-rank case (its losses equal the 1-process run's); here a
1-rank gloo group makes real FSDP2 DTensor shards in-process, for every family that can be built from scratch.
"""

from __future__ import annotations

import pytest
import torch

from llmfoundry.config import build
from llmfoundry.distributed.sharded_init import init_sharded
from llmfoundry.models import ModelConfig, build_model

FAMILIES = {
    "mpt": {"name": "mpt", "preset": "mpt-tiny", "d_model": 64, "vocab_size": 300,
            "init_config": {"name": "kaiming_normal_"}},
    "gpt2": {"name": "gpt2", "preset": "gpt-tiny", "vocab_size": 300},
    "mosaicbert": {"name": "bert", "preset": "bert-tiny", "vocab_size": 300},
    "bert-classifier": {"name": "bert", "preset": "bert-tiny", "vocab_size": 300, "num_labels": 3},
}


@pytest.fixture(scope="module")
def one_rank_group(tmp_path_factory):
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path_factory.mktemp("pg") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sharded_init_equals_whole_model_init(one_rank_group, family):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    args = build(ModelConfig, FAMILIES[family])
    reference = build_model(args)
    torch.manual_seed(3)
    reference.init_weights()

    sharded = build_model(args, device="meta")
    mesh = init_device_mesh("cpu", (1,))
    for block in sharded.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    sharded.to_empty(device="cpu")
    torch.manual_seed(3)
    init_sharded(sharded)

    got = {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in sharded.state_dict().items()}
    assert any(isinstance(p, DTensor) for p in sharded.parameters())
    assert set(got) == set(reference.state_dict())
    assert all(torch.equal(got[k], v) for k, v in reference.state_dict().items())
