"""Exports load in plain transformers offline with our logits; imports round-trip bitwise."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from llmfoundry.checkpoint.reader import load_model_from_checkpoint, save_model_checkpoint
from llmfoundry.config import build
from llmfoundry.errors import UserError
from llmfoundry.export.hf import export_model, import_hf, native_target
from llmfoundry.models import ModelConfig, build_model
from tests.conftest import run_cli

NATIVE = {
    "mpt": ({"name": "mpt", "preset": "mpt-tiny", "vocab_size": 1000}, "MptForCausalLM"),
    "gpt2": ({"name": "gpt2", "preset": "gpt-tiny", "vocab_size": 1000}, "GPT2LMHeadModel"),
    "llama": ({"name": "mpt", "preset": "mpt-tiny", "vocab_size": 1000, "norm_type": "rmsnorm",
               "learned_pos_emb": False, "tie_word_embeddings": False,
               "attn_config": {"alibi": False, "rope": True, "kv_n_heads": 2},
               "ffn_config": {"ffn_type": "mptglu", "ffn_act_fn": {"name": "silu"}}}, "LlamaForCausalLM"),
    "bert": ({"name": "bert", "preset": "bert-tiny", "classic": True, "unpad": False, "norm_type": "layernorm",
              "vocab_size": 1000}, "BertForMaskedLM"),
}


def make(raw):
    torch.manual_seed(0)
    model = build_model(build(ModelConfig, raw))
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize("family", list(NATIVE))
def test_native_export_matches_and_round_trips(tmp_path, family):
    raw, cls_name = NATIVE[family]
    model = make(raw)
    result = export_model(model, tmp_path / "hf", tokenizer_dir=None)
    assert result["class"] == cls_name
    auto = AutoModelForMaskedLM if family == "bert" else AutoModelForCausalLM
    hf = auto.from_pretrained(str(tmp_path / "hf"), local_files_only=True).eval()
    assert type(hf).__name__ == cls_name
    x = torch.randint(0, 1000, (2, 24))
    with torch.no_grad():
        assert (model(x) - hf(x).logits).abs().max() <= 1e-5
    back = import_hf(tmp_path / "hf")
    assert set(back.state_dict()) == set(model.state_dict())
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("raw", "reason", "auto"),
    [
        ({"name": "mpt", "preset": "mpt-tiny", "vocab_size": 1000, "attn_config": {"kv_n_heads": 2, "qk_ln": True}},
         "multi-head attention", AutoModelForCausalLM),
        ({"name": "bert", "preset": "bert-tiny", "vocab_size": 1000}, "MosaicBERT", AutoModelForMaskedLM),
    ],
)
def test_non_native_configs_export_with_our_modeling_file(tmp_path, raw, reason, auto):
    model = make(raw)
    target, why = native_target(model)
    assert target is None and reason in why
    result = export_model(model, tmp_path / "hf", tokenizer_dir=None)
    assert result["trust_remote_code"] == "true" and reason in result["reason"]
    hf = auto.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True, local_files_only=True).eval()
    x = torch.randint(5, 1000, (2, 24))
    with torch.no_grad():
        assert (model(x) - hf(x).logits).abs().max() <= 1e-6
    back = import_hf(tmp_path / "hf")
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())
    if auto is AutoModelForCausalLM:  # generate works through the wrapper and equals our own greedy loop
        ids = x[:1, :8]
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False, pad_token_id=0)
        expect = ids
        with torch.no_grad():
            for _ in range(4):
                expect = torch.cat([expect, model(expect)[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert torch.equal(out, expect)


def test_bf16_export(tmp_path):
    export_model(make(NATIVE["mpt"][0]), tmp_path / "hf", tokenizer_dir=None, dtype="bf16")
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), local_files_only=True, dtype="auto")
    assert hf.dtype == torch.bfloat16


def test_checkpoint_reader_and_errors(tmp_path, gpt2_tokenizer_dir):
    config = {"model": {"name": "mpt", "preset": "mpt-tiny", "vocab_size": 50257},
              "tokenizer": {"name": str(gpt2_tokenizer_dir)}}
    model = make(config["model"])
    save_model_checkpoint(model, config, tmp_path / "run" / "checkpoints" / "step-00000004")
    with pytest.raises(UserError, match="latest: missing though the folder holds checkpoints; the newest complete "
                                        "checkpoint is step-00000004"):
        load_model_from_checkpoint(tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step-00000004\n")
    loaded, cfg = load_model_from_checkpoint(tmp_path / "run")
    assert cfg["model"]["preset"] == "mpt-tiny"
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(UserError, match="no such run or checkpoint folder"):
        load_model_from_checkpoint(tmp_path / "nope")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step-00000099\n")
    with pytest.raises(UserError, match="latest: names step-00000099, which does not exist; the previous complete "
                                        "checkpoint is step-00000004"):
        load_model_from_checkpoint(tmp_path / "run")


@pytest.mark.slow
def test_cli_inference_convert_and_generate(tmp_path, gpt2_tokenizer_dir):
    config = {"model": {"name": "mpt", "preset": "mpt-tiny", "vocab_size": 50257},
              "tokenizer": {"name": str(gpt2_tokenizer_dir)}}
    model = make(config["model"])
    ckpt = save_model_checkpoint(model, config, tmp_path / "ckpt")
    result = run_cli("inference-convert", str(ckpt), str(tmp_path / "hf"), "--dtype", "fp32")
    assert result.returncode == 0, result.stderr
    assert "MptForCausalLM" in result.stdout
    result = run_cli("inference-convert", str(ckpt), str(tmp_path / "hf"))
    assert result.returncode == 1 and "not empty; pass --overwrite" in result.stderr
    result = run_cli("generate", str(tmp_path / "hf"), "--prompt", "The patient", "--greedy",
                     "--max-new-tokens", "6")
    assert result.returncode == 0, result.stderr
    assert "Enum subclass" not in result.stderr  # torchao's pytree notices, dropped by llmfoundry/quiet.py
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    ids = tok("The patient", return_tensors="pt").input_ids
    expected = tok.decode(hf.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.eos_token_id)[0, ids.shape[1]:],
                          skip_special_tokens=True)
    assert result.stdout.rstrip("\n") == expected
    result = run_cli("generate", str(tmp_path), "--prompt", "x")
    assert result.returncode == 1 and "no config.json" in result.stderr


def test_bad_dtype_and_reader_errors(tmp_path):
    model = make(NATIVE["mpt"][0])
    with pytest.raises(UserError, match="--dtype: got 'int8'"):
        export_model(model, tmp_path / "hf", tokenizer_dir=None, dtype="int8")
    ckpt = save_model_checkpoint(model, {"model": NATIVE["mpt"][0]}, tmp_path / "ckpt")
    (ckpt / "config.yaml").unlink()
    with pytest.raises(UserError, match="config.yaml: missing \\(the checkpoint is damaged\\)"):
        load_model_from_checkpoint(ckpt)  # the manifest lists it
    (ckpt / "manifest.json").unlink()  # as written before checkpoints carried manifests
    with pytest.raises(UserError, match="no config.yaml beside the checkpoint"):
        load_model_from_checkpoint(ckpt)
    (ckpt / "config.yaml").write_text("tokenizer: {name: x}\n")
    with pytest.raises(UserError, match="has no 'model' section"):
        load_model_from_checkpoint(ckpt)
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not a checkpoint folder"):
        load_model_from_checkpoint(tmp_path / "plain")


def test_real_minilm_round_trips_through_import_and_export(tmp_path, minilm_dir):
    from transformers import AutoModel

    ours = import_hf(minilm_dir).eval()
    export_model(ours, tmp_path / "hf", tokenizer_dir=minilm_dir)
    original = AutoModel.from_pretrained(str(minilm_dir), local_files_only=True).eval()
    exported = AutoModel.from_pretrained(str(tmp_path / "hf"), local_files_only=True).eval()
    ids = torch.randint(1000, 5000, (2, 12))
    with torch.no_grad():
        assert torch.equal(original(ids).last_hidden_state, exported(ids).last_hidden_state)


def test_cli_inference_convert_from_a_run_folder(tmp_path, gpt2_tokenizer_dir):
    config = {"model": NATIVE["gpt2"][0], "tokenizer": {"name": str(gpt2_tokenizer_dir)}}
    config["model"] = {**config["model"], "vocab_size": 50257}
    save_model_checkpoint(make(config["model"]), config, tmp_path / "run" / "checkpoints" / "step-00000002")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step-00000002\n")
    result = run_cli("inference-convert", str(tmp_path / "run"), str(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr
    assert "GPT2LMHeadModel" in result.stdout
