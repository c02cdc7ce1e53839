"""Composer / LLM Foundry checkpoints: a real one (../shared/foundry-v0.21/artifacts) against Foundry's own export."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from llmfoundry.checkpoint.composer import is_composer_checkpoint, load_composer_weights, read_composer
from llmfoundry.checkpoint.reader import load_model_from_checkpoint
from llmfoundry.errors import UserError


@pytest.fixture(scope="module")
def artifacts(shared_dir: Path) -> Path:
    return shared_dir / "foundry-v0.21" / "artifacts"


@pytest.fixture(scope="module")
def composer_pt(artifacts: Path) -> Path:
    return artifacts / "composer-checkpoint" / "ep0-ba60-rank0.pt"


@pytest.fixture(scope="module")
def batch(artifacts: Path) -> torch.Tensor:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(artifacts / "tokenizer"))
    texts = ["The committee published its report on the history of the river valley.",
             "In 1912 the railway reached the town, and the population doubled within a decade of trade."]
    ids = [tok(t)["input_ids"][:16] for t in texts]
    return torch.tensor(ids)


@pytest.fixture(scope="module")
def foundry_logits(artifacts: Path, batch: torch.Tensor) -> torch.Tensor:
    """LLM Foundry's HF export of the same run, run by transformers with its own remote code (the reference)."""
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(str(artifacts / "hf-export"), trust_remote_code=True,
                                               local_files_only=True, dtype=torch.float32).eval()
    with torch.no_grad():
        return ref(batch).logits


def test_composer_checkpoint_gives_foundry_export_logits(composer_pt, batch, foundry_logits):
    assert is_composer_checkpoint(composer_pt)
    model, config = load_model_from_checkpoint(composer_pt)
    assert config["model"]["d_model"] == 128 and config["model"]["attn_config"]["alibi"]
    with torch.no_grad():
        ours = model(batch)
    torch.testing.assert_close(ours, foundry_logits, atol=1e-5, rtol=0)


def test_inference_convert_reads_a_composer_checkpoint(composer_pt, artifacts, batch, foundry_logits, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from typer.testing import CliRunner

    from llmfoundry.cli import app

    out = tmp_path / "hf"
    result = CliRunner().invoke(app, ["inference-convert", str(composer_pt), str(out)])
    assert result.exit_code == 0, result.output
    assert "MptForCausalLM" in result.output
    exported = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(batch).logits, foundry_logits, atol=1e-5, rtol=0)
    tok = AutoTokenizer.from_pretrained(str(out))  # the tokenizer Composer kept inside the checkpoint
    run_tokenizer = AutoTokenizer.from_pretrained(str(artifacts / "tokenizer"))
    assert tok.get_vocab() == run_tokenizer.get_vocab() and tok.eos_token == run_tokenizer.eos_token


def test_load_path_warm_starts_from_a_composer_checkpoint(composer_pt, batch, foundry_logits):
    from llmfoundry.models import build_model
    from llmfoundry.models.mpt import AttnConfig, MptArgs

    args = MptArgs(d_model=128, n_heads=4, n_layers=2, max_seq_len=128, vocab_size=8192, no_bias=True,
                   learned_pos_emb=False, attn_config=AttnConfig(alibi=True, attn_impl="torch"))
    model = build_model(args)
    model.init_weights()
    notes = load_composer_weights(model, composer_pt, weights_only=True)
    assert "after 60 batches" in notes[0]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(batch), foundry_logits, atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="load_weights_only: true"):
        load_composer_weights(model, composer_pt, weights_only=False)
    wrong = build_model(MptArgs(d_model=64, n_heads=4, n_layers=2, vocab_size=8192, no_bias=True))
    with pytest.raises(UserError, match="does not match this model"):
        load_composer_weights(wrong, composer_pt, weights_only=True)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    bad = tmp_path / "bad.pt"
    torch.save({"state": {"model": {}}, "hook": _Evil(str(marker))}, bad)
    with pytest.raises(UserError, match="refusing to unpickle"):
        read_composer(bad)
    assert not marker.exists()


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_sharded_composer_checkpoint(composer_pt, batch, foundry_logits, tmp_path):
    """Composer's sharded format: DCP of {'state': {'model': ...}, 'rng': ...} (per composer/utils/checkpoint.py;
    written here from the real monolithic weights, as no Composer-written sharded checkpoint is at hand)."""
    import torch.distributed.checkpoint as dcp

    from llmfoundry.models import build_model
    from llmfoundry.models.mpt import AttnConfig, MptArgs

    weights = read_composer(composer_pt).model
    folder = tmp_path / "ep0-ba60"
    dcp.save({"state": {"model": weights, "timestamp": {"batch": 60}}, "rng": {"seed": 17}},
             checkpoint_id=str(folder))
    assert is_composer_checkpoint(folder)
    args = MptArgs(d_model=128, n_heads=4, n_layers=2, max_seq_len=128, vocab_size=8192, no_bias=True,
                   learned_pos_emb=False, attn_config=AttnConfig(alibi=True, attn_impl="torch"))
    model = build_model(args)
    model.init_weights()
    load_composer_weights(model, folder, weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(batch), foundry_logits, atol=1e-5, rtol=0)


def test_load_path_rank_placeholder_means_rank_zeros_file(composer_pt):
    from llmfoundry.checkpoint.reader import resolve_checkpoint

    assert resolve_checkpoint(str(composer_pt).replace("rank0", "rank{rank}")) == composer_pt
