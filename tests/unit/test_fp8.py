"""precision: amp_fp8 (torchao float8 training): a one-line error off fp8 GPUs, the right layers converted, the
same parameter names; on an fp8 GPU the loss tracks bf16's."""

from __future__ import annotations

import pytest
import torch

from llmfoundry.config import build
from llmfoundry.errors import UserError
from llmfoundry.models import ModelConfig, build_model
from llmfoundry.train.fp8 import apply_fp8, check_fp8
from tests.conftest import REPO, run_cli

pytest.importorskip("torchao")


def tiny(**extra):
    torch.manual_seed(0)
    model = build_model(build(ModelConfig, {"name": "mpt", "preset": "mpt-tiny", "vocab_size": 512, **extra}))
    model.init_weights()
    return model


def test_fp8_off_an_fp8_gpu_is_one_clear_error():
    with pytest.raises(UserError, match="amp_fp8 needs an fp8 GPU .*this is cpu: use amp_bf16"):
        check_fp8(torch.device("cpu"))


def test_cli_refuses_amp_fp8_on_cpu_in_one_line():
    """Preflight reports every problem at once (here also the demo's data, absent), one line each."""
    result = run_cli("train", str(REPO / "yamls" / "pretrain" / "tiny-cpu.yaml"), "precision=amp_fp8")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    fp8 = [line for line in result.stderr.splitlines() if "amp_fp8" in line]
    assert fp8 == ["error: precision: amp_fp8 needs an fp8 GPU (H100-class, compute capability 8.9+); this is "
                   "cpu: use amp_bf16 or fp32"], result.stderr[-2000:]


def test_block_linears_become_float8_and_names_stay():
    from torchao.float8.float8_linear import Float8Linear

    model = tiny()
    names = list(model.state_dict())
    assert apply_fp8(model) == 4 * model.args.n_layers  # Wqkv, out_proj, up_proj, down_proj per block
    assert list(model.state_dict()) == names
    assert all(not isinstance(m, Float8Linear) for m in model.transformer["wte"].modules())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
                    reason="needs an fp8 GPU")
def test_fp8_training_step_tracks_bf16():
    ids = torch.randint(0, 512, (8, 256), device="cuda")
    losses = {}
    for fp8 in (False, True):
        model = tiny(d_model=256, n_heads=4, max_seq_len=256).cuda()
        if fp8:
            apply_fp8(model)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, labels=ids.roll(-1, 1)) / ids.numel()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        losses[fp8] = loss.item()
    assert abs(losses[True] - losses[False]) < 0.02 * losses[False]
