"""The tile-built BlockMask (layers/flex.py) against torch's own `create_block_mask`, which evaluates every pair.

Eager FlexAttention on CPU ignores block sparsity (it applies the mask_mod densely), so an output test could not
catch a tile wrongly called empty or full: these tests compare the tile classification itself.
"""

from __future__ import annotations

import pytest
import torch

from llmfoundry.models.layers import flex as flex_parts

pytest.importorskip("torch.nn.attention.flex_attention")


def tiles(num: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """(count [B,H,Q], indices [B,H,Q,K]) -> [B, Q, K] bool of the listed tiles."""
    out = torch.zeros(num.shape[0], num.shape[2], n, dtype=torch.bool)
    for b in range(num.shape[0]):
        for q in range(num.shape[2]):
            out[b, q, idx[b, 0, q, : num[b, 0, q]].long()] = True
    return out


def reference(segments: torch.Tensor | None, t: int, causal: bool):
    from torch.nn.attention.flex_attention import create_block_mask

    def mod(b, h, q, kv):
        keep = q >= kv if causal else q == q
        return keep & (segments[b, q] == segments[b, kv]) if segments is not None else keep

    return create_block_mask(mod, segments.shape[0] if segments is not None else None, None, t, t, device="cpu")


def layouts(t: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(t)
    docs = torch.randint(0, 2, (2, t), generator=g).mul(torch.rand(2, t, generator=g) < 0.01).cumsum(1)
    pad_end = docs.clone()
    pad_end[0, t - 140:] = -1  # the collators' padding id
    pad_start = docs.clone()
    pad_start[1, :150] = -1  # left padding (generation)
    scrambled = torch.randint(0, 3, (2, t), generator=g)  # not what any collator makes: still exact
    return {"docs": docs, "pad_end": pad_end, "pad_start": pad_start, "scrambled": scrambled}


@pytest.mark.parametrize("t", [300, 512])
@pytest.mark.parametrize("causal", [True, False])
def test_tiles_never_drop_an_allowed_pair_and_match_torch_on_packed_documents(t, causal):
    n = -(-t // 128)
    for name, segments in [("none", None), *layouts(t).items()]:
        if segments is None and not causal:
            assert flex_parts.flex_block_mask(None, t, torch.device("cpu"), causal) is None  # attend to all
            continue
        ours = flex_parts.flex_block_mask(segments, t, torch.device("cpu"), causal)
        ref = reference(segments, t, causal)
        o_part, o_full = tiles(ours.kv_num_blocks, ours.kv_indices, n), tiles(ours.full_kv_num_blocks, ours.full_kv_indices, n)
        r_part, r_full = tiles(ref.kv_num_blocks, ref.kv_indices, n), tiles(ref.full_kv_num_blocks, ref.full_kv_indices, n)
        assert not (o_part & o_full).any(), name
        assert ((r_part | r_full) <= (o_part | o_full)).all(), f"{name}: a tile with allowed pairs was dropped"
        assert (o_full <= r_full).all(), f"{name}: a tile called full has a masked pair"
        if name in ("none", "docs"):  # monotonic ids: the tile ranges are exact
            assert torch.equal(o_part, r_part) and torch.equal(o_full, r_full), name
        assert ours.seq_lengths == (t, t)


def test_block_mask_at_65k_tokens_is_tile_sized():
    t = 65536
    segments = (torch.arange(t) // 3000)[None].expand(2, t)
    mask = flex_parts.flex_block_mask(segments, t, torch.device("cpu"), causal=True)
    n = t // 128
    assert mask.kv_indices.shape == (2, 1, n, n)  # 2 x 512 x 512 int32: 2 MiB, against 8 GiB of [B,1,T,T] bools
    # a document spans ~24 tiles: a row of query tiles (at most two documents) lists only those documents' tiles
    listed = mask.kv_num_blocks + mask.full_kv_num_blocks
    assert int(listed.max()) <= 2 * 25 and int(listed.sum()) < 0.05 * 2 * n * n


def test_static_causal_mask_is_built_once():
    a = flex_parts.flex_block_mask(None, 1000, torch.device("cpu"), causal=True)
    b = flex_parts.flex_block_mask(None, 1000, torch.device("cpu"), causal=True)
    assert a is b
