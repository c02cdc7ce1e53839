"""Model families against real references: transformers classes with the same weights, a real BERT checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from llmfoundry.config import build
from llmfoundry.errors import UserError
from llmfoundry.export.names import from_hf, to_hf
from llmfoundry.models import ModelConfig, build_model

def make(raw: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(build(ModelConfig, raw))
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize(
    ("raw", "millions"),
    [
        ({"name": "mpt", "preset": "mpt-7b"}, 6649),  # published: 6.7B
        ({"name": "mpt", "preset": "mpt-125m"}, 124),
        ({"name": "mpt", "preset": "mpt-30b"}, 29955),  # published: 30B
        ({"name": "gpt2", "preset": "gpt2-small"}, 124),  # published: 124M
        ({"name": "gpt2", "preset": "biomedlm-2.7b"}, 2594),  # published: 2.7B
        ({"name": "bert", "preset": "mosaicbert-base"}, 137),  # published: 137M
        ({"name": "bert", "preset": "bert-base"}, 110),  # published: 110M
    ],
)
def test_preset_sizes_on_meta_device(raw, millions):
    model = build_model(build(ModelConfig, raw), device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert abs(model.num_params() / 1e6 - millions) / millions < 0.01


def test_vocab_is_padded_and_explicit_keys_override_preset():
    args = build(ModelConfig, {"name": "mpt", "preset": "mpt-7b", "vocab_size": 50277, "n_layers": 2})
    assert args.padded_vocab_size == 50304 and args.d_model == 4096 and args.n_layers == 2
    # MPT-7B's 50432 is GPT-NeoX's padding to a multiple of 256 (128 x 2-way tensor parallel)
    assert build(ModelConfig, {"name": "mpt", "vocab_size": 50277, "pad_vocab_multiple": 256}).padded_vocab_size == 50432
    assert args.attn_config.alibi  # nested preset keys survive a partial override
    args = build(ModelConfig, {"name": "mpt", "preset": "mpt-7b", "attn_config": {"attn_impl": "torch"}})
    assert args.attn_config.alibi and args.attn_config.attn_impl == "torch"


def test_llm_foundry_model_block_validates_and_errors_are_precise():
    foundry_block = {
        "name": "mpt_causal_lm", "init_device": "meta", "d_model": 768, "n_heads": 12, "n_layers": 12,
        "expansion_ratio": 4, "max_seq_len": 2048, "vocab_size": 50368,
        "attn_config": {"attn_impl": "sdpa", "alibi": True}, "loss_fn": "torch_crossentropy",
    }
    build(ModelConfig, foundry_block)
    with pytest.raises(UserError) as info:
        build(ModelConfig, {**foundry_block, "attn_config": {"alibbi": True}, "preset": "mpt-7bb"}, key="model")
    text = "\n".join(info.value.problems)
    assert "did you mean 'mpt-7b'" in text
    with pytest.raises(UserError, match=r"model\.attn_config\.alibbi: unknown key \(did you mean 'alibi'\?\)"):
        build(ModelConfig, {**foundry_block, "attn_config": {"alibbi": True}}, key="model")
    with pytest.raises(UserError, match="kv_n_heads=5 must divide n_heads=12"):
        build(ModelConfig, {**foundry_block, "attn_config": {"kv_n_heads": 5}})


def _tiny_mpt(**extra):
    return {"name": "mpt", "preset": "mpt-tiny", "vocab_size": 1000, **extra}


@pytest.mark.parametrize("impl", ["torch", "sdpa"])
def test_mpt_matches_transformers_mpt(impl):
    from transformers import MptConfig, MptForCausalLM

    ours = make(_tiny_mpt(attn_config={"attn_impl": impl, "alibi": True}))
    theirs = MptForCausalLM(MptConfig(d_model=128, n_heads=4, n_layers=2, max_seq_len=256, vocab_size=1024,
                                      no_bias=True, attn_config={"alibi": True})).eval()
    theirs.load_state_dict(to_hf(ours.state_dict(), "mpt"), strict=False)
    x = torch.randint(0, 1000, (2, 40))
    with torch.no_grad():
        assert (ours(x) - theirs(x).logits).abs().max() <= 1e-5


def test_gpt_matches_transformers_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    ours = make({"name": "gpt2", "preset": "gpt-tiny", "vocab_size": 1000})
    theirs = GPT2LMHeadModel(GPT2Config(n_embd=128, n_head=4, n_layer=2, n_positions=256, vocab_size=1024)).eval()
    theirs.load_state_dict(to_hf(ours.state_dict(), "gpt2"), strict=False)
    x = torch.randint(0, 1000, (2, 40))
    with torch.no_grad():
        assert (ours(x) - theirs(x).logits).abs().max() <= 1e-5


def test_llama_shaped_mpt_matches_transformers_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    ours = make(_tiny_mpt(norm_type="rmsnorm", learned_pos_emb=False, tie_word_embeddings=False,
                          attn_config={"alibi": False, "rope": True, "kv_n_heads": 2},
                          ffn_config={"ffn_type": "mptglu", "ffn_act_fn": {"name": "silu"}}))
    theirs = LlamaForCausalLM(LlamaConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, vocab_size=1024,
                                          max_position_embeddings=256, rms_norm_eps=1e-5)).eval()
    missing, _ = theirs.load_state_dict(to_hf(ours.state_dict(), "llama", q_dim=128), strict=False)
    assert not missing
    x = torch.randint(0, 1000, (2, 40))
    with torch.no_grad():
        assert (ours(x) - theirs(x).logits).abs().max() <= 1e-5


@pytest.mark.parametrize("rope", [False, True])
def test_packed_documents_do_not_attend_to_each_other(rope):
    attn = {"attn_uses_sequence_id": True, **({"alibi": False, "rope": True, "kv_n_heads": 1} if rope else {})}
    model = make(_tiny_mpt(attn_config=attn))
    a, b = torch.randint(0, 1000, (1, 7)), torch.randint(0, 1000, (1, 9))
    seq = torch.tensor([[0] * 7 + [1] * 9])
    with torch.no_grad():
        together = model(torch.cat([a, b], dim=1), sequence_id=seq)
        assert (together[:, :7] - model(a)).abs().max() < 1e-5
        if not rope:  # ALiBi is translation invariant: the second document matches its solo logits too
            assert (together[:, 7:] - model(b)).abs().max() < 1e-5


def test_loss_with_labels_is_sum_of_cross_entropy_and_grads_flow():
    model = make(_tiny_mpt(loss_chunk_size=16)).train()
    x = torch.randint(0, 1000, (2, 20))
    labels = torch.roll(x, -1, dims=1)
    labels[:, -1] = -100
    loss = model(x, labels=labels)
    with torch.no_grad():
        logits = model(x)
    ref = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
    assert abs(loss.item() - ref.item()) < 1e-3
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_meta_build_then_init_is_deterministic():
    args = build(ModelConfig, _tiny_mpt())
    states = []
    for _ in range(2):
        model = build_model(args, device="meta")
        model.to_empty(device="cpu")
        torch.manual_seed(3)
        model.init_weights()
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert model.flops_per_token(256) > 6 * model.num_params(exclude_embeddings=True)


def test_classic_bert_matches_real_minilm_checkpoint(minilm_dir):
    """A real pretrained checkpoint (all-MiniLM-L6-v2) loaded into our classic BERT: same hidden states."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertModel

    config = json.loads((minilm_dir / "config.json").read_text())
    ours = make({"name": "bert", "classic": True, "unpad": False, "norm_type": "layernorm", "pad_vocab_multiple": 1,
                 "d_model": config["hidden_size"], "n_heads": config["num_attention_heads"],
                 "n_layers": config["num_hidden_layers"], "intermediate_size": config["intermediate_size"],
                 "vocab_size": config["vocab_size"], "max_seq_len": config["max_position_embeddings"]})
    state = {f"bert.{k}": v for k, v in load_file(str(minilm_dir / "model.safetensors")).items()}
    keys = [k for k in ours.state_dict() if k.startswith("bert.")]
    missing, unexpected = ours.load_state_dict(from_hf(state, keys, "bert"), strict=False)
    assert not unexpected and all(k.startswith("cls") for k in missing)
    theirs = BertModel.from_pretrained(str(minilm_dir), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(minilm_dir), local_files_only=True)
    batch = tok(["Aspirin reduces the risk of heart attack.", "A short one."], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = theirs(**batch).last_hidden_state
        for unpad in (False, True):
            ours.args.unpad = unpad
            hidden, layout = ours.bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            got = layout.to_padded(hidden) if unpad else hidden
            real = batch["attention_mask"].bool()
            assert (got[real] - ref[real]).abs().max() <= 1e-5


def test_mosaicbert_unpadded_equals_padded_and_mlm_loss():
    model = make({"name": "bert", "preset": "bert-tiny", "vocab_size": 1000, "attn_impl": "torch"})
    ids = torch.randint(5, 1000, (3, 16))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 10:] = False
    mask[2, 4:] = False
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    results = {}
    for unpad in (True, False):
        model.args.unpad = unpad
        with torch.no_grad():
            results[unpad] = (model(ids, attention_mask=mask), model(ids, attention_mask=mask, labels=labels))
    assert (results[True][0][mask] - results[False][0][mask]).abs().max() < 1e-5
    assert abs(results[True][1] - results[False][1]) < 1e-4
    ref = torch.nn.functional.cross_entropy(results[False][0].flatten(0, 1), labels.flatten(), reduction="sum")
    assert abs(results[False][1] - ref) < 1e-3


def test_bert_sequence_classifier():
    model = make({"name": "bert", "preset": "bert-tiny", "vocab_size": 1000, "num_labels": 3})
    ids = torch.randint(5, 1000, (4, 8))
    with torch.no_grad():
        logits = model(ids)
        loss = model(ids, labels=torch.tensor([0, 1, 2, 1]))
    assert logits.shape == (4, 3)
    ref = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 1]), reduction="sum")
    assert abs(loss - ref) < 1e-5


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2", "cohere"])
def test_hf_causal_lm_wraps_a_local_directory(tmp_path, family):
    """Built on meta like every model: weights from the directory, and RoPE's non-persistent inv_freq intact."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if family == "gpt2":
        source = GPT2LMHeadModel(GPT2Config(n_embd=32, n_head=2, n_layer=3, n_positions=64, vocab_size=300))
    elif family == "llama":
        source = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                              num_attention_heads=4, num_key_value_heads=2, vocab_size=300))
    elif family == "gemma2":  # logits soft-capped with tanh
        from transformers import Gemma2Config, Gemma2ForCausalLM

        source = Gemma2ForCausalLM(Gemma2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                                num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                                vocab_size=300, final_logit_softcapping=5.0))
    else:  # logits scaled
        from transformers import CohereConfig, CohereForCausalLM

        source = CohereForCausalLM(CohereConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                                num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                                                logit_scale=0.5))
    source.eval().save_pretrained(tmp_path / "hf")
    args = build(ModelConfig, {"name": "hf_causal_lm", "pretrained_model_name_or_path": str(tmp_path / "hf")})
    model = build_model(args, device="meta")
    assert len(model.blocks) == 3 and all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    model.init_weights()
    model.eval()
    x = torch.randint(0, 300, (2, 16))
    labels = torch.roll(x, -1, 1)
    labels[:, -1] = -100
    with torch.no_grad():
        assert torch.equal(model(x), source(x).logits)
        ours = model(x, labels=labels)
        expected = torch.nn.functional.cross_entropy(source(x).logits[:, :-1].flatten(0, 1), x[:, 1:].flatten(),
                                                     reduction="sum")
    assert abs(ours - expected) < 1e-4
    with pytest.raises(UserError, match="never downloaded"):
        build(ModelConfig, {"name": "hf_causal_lm", "pretrained_model_name_or_path": "gpt2"})


def test_load_hf_starts_from_an_export(tmp_path):
    from llmfoundry.export.hf import export_model
    from llmfoundry.train.loop import _load_hf_weights

    trained = make(_tiny_mpt())
    export_model(trained, tmp_path / "hf", tokenizer_dir=None)
    fresh = make(_tiny_mpt(), seed=1)
    _load_hf_weights(fresh, str(tmp_path / "hf"))
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in trained.state_dict().items())
    with pytest.raises(UserError, match="does not have this model's shape"):
        _load_hf_weights(make(_tiny_mpt(d_model=64)), str(tmp_path / "hf"))
