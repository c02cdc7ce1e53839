"""hf_causal_lm's LLM Foundry keys: config_overrides, attn_implementation / use_flash_attention_2, init_device."""

from __future__ import annotations

import pytest
import torch

from llmfoundry.config import build
from llmfoundry.errors import UserError
from llmfoundry.models import ModelConfig, build_model


@pytest.fixture(scope="module")
def mpt_dir(tmp_path_factory):
    from transformers import MptConfig, MptForCausalLM

    out = tmp_path_factory.mktemp("hf") / "mpt"
    torch.manual_seed(0)
    MptForCausalLM(MptConfig(n_layers=2, d_model=32, n_heads=2, max_seq_len=64, vocab_size=128)).save_pretrained(out)
    return out


def args(path, **kw):
    return build(ModelConfig, {"name": "hf_causal_lm", "pretrained_model_name_or_path": str(path), **kw})


def test_config_overrides_reach_the_model_nested_ones_too(mpt_dir):
    a = args(mpt_dir, config_overrides={"max_seq_len": 128, "attn_config": {"softmax_scale": 0.5}},
             init_device="mixed", use_auth_token=True)
    model = build_model(a)
    model.init_weights()
    config = model.model.config
    assert config.max_seq_len == 128 and config.attn_config.softmax_scale == 0.5
    plain = build_model(args(mpt_dir))
    plain.init_weights()
    ids = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the same weights, another attention scale: the override is really used
        assert not torch.allclose(model(ids), plain(ids))


def test_an_override_the_config_lacks_is_a_user_error(mpt_dir):
    with pytest.raises(UserError, match=r"config_overrides.max_position_embedings: the model's config has no"):
        build_model(args(mpt_dir, config_overrides={"max_position_embedings": 4096}))
    with pytest.raises(UserError, match=r"config_overrides.attn_config.nope"):
        build_model(args(mpt_dir, config_overrides={"attn_config": {"nope": 1}}))


def test_attn_implementation(mpt_dir):
    assert args(mpt_dir, use_flash_attention_2=True).attn_implementation == "flash_attention_2"
    with pytest.raises(UserError, match="contradicts"):
        args(mpt_dir, use_flash_attention_2=True, attn_implementation="sdpa")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="flash_attention_2 needs the flash-attn package and a CUDA GPU"):
            build_model(args(mpt_dir, use_flash_attention_2=True))
    model = build_model(args(mpt_dir, attn_implementation="eager"))
    assert model.model.config._attn_implementation == "eager"
