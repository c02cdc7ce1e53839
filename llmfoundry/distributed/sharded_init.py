"""Initialize an FSDP2-sharded model with exactly the values an unsharded initialization would give.

A model too big for one device (MPT-30B in fp32 is 120 GB) cannot be initialized whole on every rank and
sharded afterwards. Here it is built on the meta device, sharded, and materialized as shards only; then each
module is initialized on its own: its parameters are swapped for full-size temporary tensors, the model's
`init_module` fills them (drawing from the seeded random stream in the same order as `init_weights`), and each
rank keeps its slice. The peak extra memory is one module's parameters (the largest is the embedding), and
the result does not depend on the number of ranks, so runs stay comparable across world sizes (tested: 2
processes give the 1-process losses).
"""

from __future__ import annotations

import torch
from torch import nn


def init_sharded(model: nn.Module) -> None:
    """Fill every parameter of `model` (DTensor shards or plain tensors) through `model.init_module`."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        for module in model.modules():
            own = dict(module.named_parameters(recurse=False))
            full = {name: nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device=_local(p).device),
                                       requires_grad=p.requires_grad)
                    for name, p in own.items()}
            module._parameters.update(full)
            try:
                model.init_module(module)  # type: ignore[operator]
            finally:
                module._parameters.update(own)
            for name, p in own.items():
                if isinstance(p, DTensor):  # every rank computed the same full tensor: keep this rank's slice
                    piece = distribute_tensor(full[name].data, p.device_mesh, p.placements, src_data_rank=None)
                    p.to_local().copy_(piece.to_local())
                else:
                    p.copy_(full[name])


def _local(p: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return p.to_local() if isinstance(p, DTensor) else p
