"""LLM Foundry callbacks and loader shapes in real (tiny) runs: hf_checkpointer, early_stopper, eval_loader lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmfoundry.checkpoint.reader import load_model_from_checkpoint
from tests.conftest import REPO, toy_corpus

TINY = """
base: {base}
variables:
  data_local: {data}
  tokenizer: {tok}
  max_seq_len: 32
  run_name: cb
model:
  name: mpt
  preset: mpt-tiny
  d_model: 64
  vocab_size: 512
max_duration: 4ba
global_train_batch_size: 4
device_train_microbatch_size: 4
precision: fp32
eval_interval: 0
save_interval: 0
progress_bar: false
optimizer:
  lr: 0.01
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from llmfoundry.data.convert import convert_dataset

    root = tmp_path_factory.mktemp("callbacks")
    corpus, _ = toy_corpus(root)
    convert_dataset([str(corpus)], str(root / "data"), tokenizer=str(root / "tok"), max_seq_len=32,
                    val_fraction=0.1, progress=False)
    config = root / "tiny.yaml"
    config.write_text(TINY.format(base=REPO / "yamls" / "pretrain" / "_base.yaml", data=root / "data", tok=root / "tok"))
    return root, config


def train(config: Path, *overrides: str) -> list[dict]:
    from llmfoundry.config import load_typed
    from llmfoundry.config.schema import TrainConfig
    from llmfoundry.train.loop import train as run

    cfg, loaded = load_typed(TrainConfig, config, list(overrides))
    run(cfg, loaded)
    return [json.loads(line) for line in (Path(cfg.save_folder) / "metrics.jsonl").read_text().splitlines()]


def logits_of(model, ids):
    with torch.no_grad():
        out = model(ids)
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.slow
def test_hf_checkpointer_exports_while_training(workspace, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, config = workspace
    run = tmp_path / "run"
    train(config, f"save_folder={run}", f"callbacks.hf_checkpointer.save_folder={tmp_path}/{{run_name}}/exports",
          "callbacks.hf_checkpointer.save_interval=2ba")
    exports = tmp_path / "cb" / "exports" / "huggingface"
    assert sorted(p.name for p in exports.iterdir()) == ["ba2", "ba4"]
    hf = AutoModelForCausalLM.from_pretrained(str(exports / "ba4"), local_files_only=True).eval()
    ours = load_model_from_checkpoint(run)[0]  # the final checkpoint = the weights at step 4
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits_of(hf, ids)[..., :512], logits_of(ours, ids)[..., :512], atol=1e-5, rtol=0)
    assert not torch.allclose(  # ba2 is the earlier model, not a copy of the last
        logits_of(AutoModelForCausalLM.from_pretrained(str(exports / "ba2"), local_files_only=True), ids)[..., :512],
        logits_of(hf, ids)[..., :512])
    assert len(AutoTokenizer.from_pretrained(str(exports / "ba4"))) > 0


@pytest.mark.slow
def test_hf_checkpointer_uploads_to_s3(workspace, tmp_path, s3_server):
    _, config = workspace
    train(config, f"save_folder={tmp_path / 'run'}", "max_duration=2ba",
          "callbacks.hf_checkpointer.save_folder=s3://corpus/{run_name}", "callbacks.hf_checkpointer.save_interval=1dur",
          "callbacks.hf_checkpointer.precision=bfloat16")
    listing = s3_server.list_objects_v2(Bucket="corpus", Prefix="cb/huggingface/ba2/")
    names = {obj["Key"].rsplit("/", 1)[1] for obj in listing.get("Contents", [])}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names, names


@pytest.mark.slow
def test_early_stopper_stops_and_checkpoints(workspace, tmp_path):
    _, config = workspace
    run = tmp_path / "run"
    # "higher is better" on a falling loss: the second evaluation is no improvement, so patience 1 stops there
    rows = train(config, f"save_folder={run}", "max_duration=6ba", "eval_interval=1ba",
                 "callbacks.early_stopper.monitor=LanguageCrossEntropy", "callbacks.early_stopper.comp=gt",
                 "callbacks.early_stopper.patience=1")
    assert max(r["step"] for r in rows) == 2
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000002"


@pytest.mark.slow
def test_several_eval_loaders_are_logged_by_label(workspace, tmp_path):
    root, config = workspace
    loader = f"{{name: text, dataset: {{local: {root / 'data'}, split: val, max_seq_len: 32}}}}"
    one = train(config, f"save_folder={tmp_path / 'one'}", "max_duration=2ba", "eval_interval=2ba",
                f"eval_loader={loader}")
    two = train(config, f"save_folder={tmp_path / 'two'}", "max_duration=2ba", "eval_interval=2ba",
                f"eval_loader=[{loader[:-1]}, label: a}}, {loader[:-1]}, label: b}}]")
    single = [r for r in one if "loss/val" in r][-1]
    labelled = [r for r in two if "loss/val/a" in r][-1]
    assert "loss/val" not in labelled
    assert labelled["loss/val/a"] == pytest.approx(single["loss/val"], abs=1e-6)
    assert labelled["loss/val/b"] == pytest.approx(single["loss/val"], abs=1e-6)
    assert labelled["perplexity/val/b"] == pytest.approx(single["perplexity/val"], rel=1e-6)


def test_amp_fp8_on_cpu_is_one_line(workspace):
    from typer.testing import CliRunner

    from llmfoundry.cli import app

    if torch.cuda.is_available():
        pytest.skip("checks the CPU message")
    _, config = workspace
    result = CliRunner().invoke(app, ["train", str(config), "precision=amp_fp8"])
    assert result.exit_code == 1
    assert result.output.strip() == ("error: precision: amp_fp8 needs an fp8 GPU (H100-class, compute capability "
                                     "8.9+); this is cpu: use amp_bf16 or fp32")
