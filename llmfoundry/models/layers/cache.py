"""Static tensors (ALiBi slopes, RoPE tables, masks of a fixed shape) built once per shape/device and reused.

A forward must not rebuild what depends only on the shape: the cache is a small LRU keyed by hashable
arguments, so eval loops over many lengths cannot grow it without bound. Entries are built outside
inference mode: a tensor first made under `torch.inference_mode()` (ICL eval) could not later be saved
for backward by a training step that reuses it. Callers must treat cached tensors as read-only.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

_Fn = TypeVar("_Fn", bound=Callable)


def static_cache(maxsize: int = 8) -> Callable[[_Fn], _Fn]:
    """`functools.lru_cache` whose entries are plain (non-inference, no-grad) tensors."""

    def wrap(fn: _Fn) -> _Fn:
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(fn)
        def cached(*args, **kwargs):  # type: ignore[no-untyped-def]
            with torch.inference_mode(False), torch.no_grad():
                return fn(*args, **kwargs)

        return cached  # type: ignore[return-value]

    return wrap
