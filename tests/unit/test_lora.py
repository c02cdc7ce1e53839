"""LoRA: adapters start as a no-op, only they train, and merging folds them in exactly."""

from __future__ import annotations

import pytest
import torch

from llmfoundry.config import build
from llmfoundry.errors import UserError
from llmfoundry.models import ModelConfig, build_model
from llmfoundry.models.lora import LoraConfig, LoraLinear, adapter_state_dict, apply_lora, merge_lora, trainable_params


def tiny(dtype=torch.float32):
    args = build(ModelConfig, {"name": "mpt", "preset": "mpt-tiny", "d_model": 32, "vocab_size": 128,
                               "attn_config": {"attn_impl": "torch"}})
    torch.manual_seed(0)
    model = build_model(args)
    model.init_weights()
    return model.to(dtype)


def test_adapters_start_as_the_base_model_and_only_they_train():
    model = tiny()
    x = torch.randint(0, 128, (2, 16))
    before = model(x)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    names = apply_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules=["Wqkv", "ffn.up_proj"]))
    assert names == [f"transformer.blocks.{i}.{m}" for i in range(2) for m in ("attn.Wqkv", "ffn.up_proj")]
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.{w}" for n in names for w in ("lora_A", "lora_B")}
    d = 32
    assert trainable_params(model) == 2 * (4 * (d + 3 * d) + 4 * (d + 4 * d))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(x, labels=x).backward()
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base.items())  # base weights keep their names and values
    assert all(after[f"{n}.lora_B"].abs().sum() > 0 for n in names)
    assert set(adapter_state_dict(model)) == trainable


def test_merged_weights_compute_what_base_plus_adapter_computes():
    model = tiny(torch.float64)
    apply_lora(model, LoraConfig(r=3, lora_alpha=5, target_modules=["Wqkv", "out_proj", "down_proj"]))
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, LoraLinear):
            torch.nn.init.normal_(m.lora_B, std=0.5)
    x = torch.randint(0, 128, (2, 16))
    adapted = model(x)
    merge_lora(model)
    assert not any(isinstance(m, LoraLinear) for m in model.modules())
    assert not any("lora" in k for k in model.state_dict())
    torch.testing.assert_close(model(x), adapted, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        assert float((adapted - tiny(torch.float64)(x)).abs().max()) > 1e-3  # the adapters did change the model


def test_target_modules_errors():
    with pytest.raises(UserError, match="match no layer of this model; its linear layers are named .*Wqkv"):
        apply_lora(tiny(), LoraConfig(target_modules=["q_proj"]))
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    with pytest.raises(UserError, match="nn.Linear layers only; transformer.h.0.attn.c_attn \\(Conv1D\\)"):
        apply_lora(hf, LoraConfig(target_modules=["c_attn"]))
    with pytest.raises(UserError, match="r: must be at least 1"):
        build(LoraConfig, {"r": 0})


def test_lora_on_a_transformers_model(tmp_path):
    """hf_causal_lm models take the same adapters (Llama-style q_proj/v_proj), and only they get gradients."""
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=100)).save_pretrained(tmp_path)
    args = build(ModelConfig, {"name": "hf_causal_lm", "pretrained_model_name_or_path": str(tmp_path),
                               "peft_config": {"r": 2, "target_modules": ["q_proj", "v_proj"]}})
    model = build_model(args)
    model.init_weights()
    x = torch.randint(0, 100, (2, 8))
    with torch.no_grad():
        before = model(x)
    apply_lora(model, args.peft_config)
    model(x, labels=x).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {n for n, _ in model.named_parameters() if "lora_" in n} and len(grads) == 8
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)


PEFT_CASES = {
    "mpt": ({"name": "mpt", "preset": "mpt-tiny", "d_model": 32, "vocab_size": 128},
            ["Wqkv", "out_proj", "up_proj", "down_proj"]),
    # attn.out_proj only: GPT-2 calls both attn and mlp output layers c_proj; only the attention one may adapt
    "gpt2": ({"name": "gpt2", "preset": "gpt-tiny", "d_model": 32, "vocab_size": 128}, ["Wqkv", "attn.out_proj"]),
    "llama": ({"name": "mpt", "preset": "mpt-tiny", "d_model": 32, "vocab_size": 128, "norm_type": "rmsnorm",
               "learned_pos_emb": False, "tie_word_embeddings": False,
               "attn_config": {"alibi": False, "rope": True, "kv_n_heads": 2},
               "ffn_config": {"ffn_type": "mptglu", "ffn_act_fn": {"name": "silu"}}}, ["Wqkv", "down_proj"]),
}


def _adapted(raw: dict, targets: list[str]):
    torch.manual_seed(0)
    model = build_model(build(ModelConfig, raw))
    model.init_weights()
    apply_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.05)  # trained adapters are not zero
    return model.eval()


@pytest.mark.parametrize("family", list(PEFT_CASES))
def test_adapters_load_in_peft_on_the_transformers_export(tmp_path, family):
    """peft (the reference LoRA) on our base export computes what our adapted model computes."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llmfoundry.export.adapters import load_adapters, save_adapters
    from llmfoundry.export.hf import export_model

    raw, targets = PEFT_CASES[family]
    adapted = _adapted(raw, targets)
    base = build_model(build(ModelConfig, raw))
    base.load_state_dict({k: v for k, v in adapted.state_dict().items() if "lora_" not in k})
    export_model(base, tmp_path / "base", tokenizer_dir=None)
    save_adapters(adapted, LoraConfig(r=4, lora_alpha=8, target_modules=targets), tmp_path / "adapters")

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "base", local_files_only=True)
    with_peft = PeftModel.from_pretrained(hf, tmp_path / "adapters").eval()
    lora_layers = {n for n, m in with_peft.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}
    assert len(lora_layers) == 2 * len(targets) + (4 if family == "llama" else 0)  # Wqkv -> q, k, v
    x = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        expected = adapted(x)
        torch.testing.assert_close(with_peft(x).logits[..., :128], expected[..., :128], rtol=1e-5, atol=1e-5)
        # and back onto a fresh copy of our base model
        load_adapters(base, tmp_path / "adapters")
        torch.testing.assert_close(base.eval()(x), expected, rtol=0, atol=0)


def test_adapters_of_a_transformers_model_load_in_peft(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from llmfoundry.export.adapters import save_adapters

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=100)).save_pretrained(tmp_path / "base")
    cfg = {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]}
    args = build(ModelConfig, {"name": "hf_causal_lm", "pretrained_model_name_or_path": str(tmp_path / "base"),
                               "peft_config": cfg})
    model = build_model(args)
    model.init_weights()
    apply_lora(model, args.peft_config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.05)
    save_adapters(model, args.peft_config, tmp_path / "adapters")
    with_peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"),
                                          tmp_path / "adapters").eval()
    x = torch.randint(0, 100, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(with_peft(x).logits, model.eval()(x), rtol=1e-5, atol=1e-5)


def test_adapter_directory_errors(tmp_path):
    from llmfoundry.export.adapters import load_adapters, save_adapters

    with pytest.raises(UserError, match="not an adapter directory"):
        load_adapters(tiny(), tmp_path)
    with pytest.raises(UserError, match="no LoRA adapters to save"):
        save_adapters(tiny(), LoraConfig(), tmp_path / "none")
    raw, targets = PEFT_CASES["llama"]
    save_adapters(_adapted(raw, targets), LoraConfig(r=4, lora_alpha=8, target_modules=targets), tmp_path / "a")
    with pytest.raises(UserError, match="adapters do not fit this model"):
        load_adapters(tiny(), tmp_path / "a")  # an ALiBi MPT has no q_proj/v_proj to put them on
    mosaic = build_model(build(ModelConfig, {"name": "mpt", "preset": "mpt-tiny", "d_model": 32, "vocab_size": 128,
                                             "attn_config": {"qk_ln": True}}))
    apply_lora(mosaic, LoraConfig(target_modules=["Wqkv"]))
    with pytest.raises(UserError, match="need a transformers class .* export the merged model instead"):
        save_adapters(mosaic, LoraConfig(), tmp_path / "b")
