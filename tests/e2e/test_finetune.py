"""Finetuning through the real training loop: a tiny model memorises a small task, LoRA trains only adapters
and exports merged, and a BERT classifier warm-starts from a checkpoint with another number of labels."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from llmfoundry.checkpoint.reader import load_model_from_checkpoint, read_config, resolve_checkpoint
from tests.conftest import run_cli

COLORS = ["red", "green", "blue", "amber", "violet"]
ANIMALS = ["otter", "heron", "lynx", "bison"]

LM_YAML = """
model:
  name: mpt
  preset: mpt-tiny
  d_model: 64
  vocab_size: 320
  attn_config: {{attn_uses_sequence_id: true}}
tokenizer: {{name: {root}/tok}}
train_loader:
  name: finetuning
  dataset: {{local: {root}/data, max_seq_len: 32, allow_pad_trimming: true}}
eval_loader:
  name: finetuning
  dataset: {{local: {root}/data, split: val, max_seq_len: 32}}
max_duration: 60ba
global_train_batch_size: 10
device_train_microbatch_size: 10
precision: fp32
eval_interval: 30ba
save_interval: 0
console_log_interval: 10ba
progress_bar: false
optimizer: {{lr: 0.005}}
scheduler: {{name: cosine_with_warmup, t_warmup: 5ba}}
"""


def example(i: int) -> dict[str, str]:
    return {"prompt": f"Item {i}: what is its tag?\n", "response": f"{COLORS[i % 5]} {ANIMALS[(i * 3) % 4]} {i * 7 % 13}"}


@pytest.fixture(scope="module")
def lm_workspace(tmp_path_factory):
    from llmfoundry.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("finetune")
    (root / "data").mkdir()
    records = [example(i) for i in range(20)]
    (root / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "data" / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:5]))
    (root / "corpus.jsonl").write_text("".join(json.dumps({"text": r["prompt"] + r["response"]}) + "\n" for r in records))
    train_tokenizer([str(root / "corpus.jsonl")], root / "tok", vocab_size=320)
    (root / "ft.yaml").write_text(LM_YAML.format(root=root))
    return root


def final_metrics(run: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        out.update(json.loads(line))
    return out


def response_accuracy(model: torch.nn.Module, root: Path) -> float:
    """Share of response tokens the model predicts exactly (greedy), over the 20 training examples."""
    from transformers import AutoTokenizer

    from llmfoundry.config.schema import FinetuneDatasetConfig
    from llmfoundry.data.finetune import build_finetune_dataset

    tok = AutoTokenizer.from_pretrained(root / "tok")
    ds, collate, _ = build_finetune_dataset(FinetuneDatasetConfig(local=str(root / "data"), max_seq_len=32,
                                                                  shuffle=False), tok, where="test")
    batch = collate(list(ds))
    labels = batch.pop("labels")
    with torch.no_grad():
        pred = model(**batch).argmax(-1)
    mask = labels != -100
    return float((pred[mask] == labels[mask]).float().mean())


@pytest.fixture(scope="module")
def memorised(lm_workspace):
    run = lm_workspace / "run-full"
    result = run_cli("train", str(lm_workspace / "ft.yaml"), f"save_folder={run}")
    assert result.returncode == 0, result.stderr
    return run, result.stdout


@pytest.mark.slow
def test_tiny_model_memorises_twenty_examples(lm_workspace, memorised):
    run, stdout = memorised
    assert "train_loader: " in stdout and "20 examples -> 20 rows" in stdout and "none truncated" in stdout
    metrics = final_metrics(run)
    assert metrics["loss/train"] < 0.1
    assert metrics["loss/val"] < 0.1
    model, _ = load_model_from_checkpoint(run)
    assert response_accuracy(model, lm_workspace) > 0.97


@pytest.mark.slow
def test_lora_trains_only_adapters_and_exports_merged(lm_workspace, memorised, tmp_path):
    import torch.distributed.checkpoint as dcp

    from llmfoundry.config import build
    from llmfoundry.export.hf import export_model
    from llmfoundry.models import ModelConfig, build_model
    from llmfoundry.models.lora import apply_lora

    base_run, _ = memorised
    run = tmp_path / "run-lora"
    result = run_cli("train", str(lm_workspace / "ft.yaml"), f"save_folder={run}", f"load_path={base_run}",
                     "max_duration=10ba", "eval_interval=0", "train_loader.dataset.packing_ratio=auto",
                     "model.peft_config={r: 4, lora_alpha: 8, target_modules: [Wqkv, up_proj]}")
    assert result.returncode == 0, result.stderr
    assert "trainable (LoRA adapters" in result.stdout and "examples/row" in result.stdout
    assert "load_path: 8 LoRA adapter tensors start fresh" in result.stdout
    # the raw checkpoint: base weights exactly the starting ones, adapters moved
    checkpoint = resolve_checkpoint(run)
    args = build(ModelConfig, read_config(checkpoint)["model"])
    adapted = build_model(args)
    apply_lora(adapted, args.peft_config)
    state = adapted.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load({"model": state}, checkpoint_id=str(checkpoint))
    adapted.load_state_dict(state)
    base = load_model_from_checkpoint(base_run)[0].state_dict()
    assert all(torch.equal(state[k], v) for k, v in base.items())
    assert all(float(v.abs().sum()) > 0 for k, v in state.items() if k.endswith("lora_B"))
    # the reader merges: the same function without adapters, and it exports to a plain transformers MPT
    merged, _ = load_model_from_checkpoint(run)
    ids = torch.randint(0, 320, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids), adapted.eval()(ids), rtol=1e-5, atol=1e-5)
    # adapters alone: a small directory that turns the base model into the finetuned one
    from llmfoundry.export.adapters import load_adapters

    done = run_cli("inference-convert", str(run), str(tmp_path / "adapters"), "--adapters-only")
    assert done.returncode == 0, done.stderr
    rebuilt = load_model_from_checkpoint(base_run)[0]
    load_adapters(rebuilt, tmp_path / "adapters")
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(ids), merged(ids), rtol=1e-5, atol=1e-5)
    assert (tmp_path / "adapters" / "adapter_model.safetensors").stat().st_size < 0.2 * sum(
        v.numel() * 4 for v in base.values())
    export_model(merged, str(tmp_path / "hf"), tokenizer_dir=str(lm_workspace / "tok"), dtype="fp32")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits[..., :320], merged(ids)[..., :320], rtol=1e-4, atol=1e-4)
    # and peft itself puts the adapters on the base run's export
    assert run_cli("inference-convert", str(base_run), str(tmp_path / "hf-base")).returncode == 0
    with_peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "hf-base"),
                                          tmp_path / "adapters").eval()
    with torch.no_grad():
        torch.testing.assert_close(with_peft(ids).logits[..., :320], merged(ids)[..., :320], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_two_processes_train_like_one_with_lora_and_packing(lm_workspace, tmp_path):
    """The same rows per step on any number of ranks: FSDP over 2 processes gives the 1-process losses."""
    import os
    import subprocess
    import sys

    from llmfoundry.config import load_typed
    from llmfoundry.config.schema import TrainConfig
    from llmfoundry.train.loop import train
    from tests.conftest import REPO

    common = ["max_duration=5ba", "eval_interval=0", "console_log_interval=1ba", "optimizer.lr=0.003",
              "train_loader.dataset.packing_ratio=3", "train_loader.dataset.allow_pad_trimming=false",
              "model.peft_config={r: 4, target_modules: [Wqkv, down_proj]}", "global_train_batch_size=4",
              "device_train_microbatch_size=2"]
    cfg, loaded = load_typed(TrainConfig, lm_workspace / "ft.yaml", [*common, f"save_folder={tmp_path / 'one'}"])
    train(cfg, loaded)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541", "-m",
         "llmfoundry.cli", "train", str(lm_workspace / "ft.yaml"), *common, "device_train_microbatch_size=1",
         f"save_folder={tmp_path / 'two'}"],
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    def losses(run: Path) -> list[float]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss/train"] for line in lines]

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 5
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-5
    w1, w2 = (load_model_from_checkpoint(tmp_path / r)[0].state_dict() for r in ("one", "two"))
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-5


GLUE_YAML = """
model:
  name: bert
  preset: bert-tiny
  num_labels: {labels}
  hidden_dropout: 0.0
  attn_dropout: 0.0
tokenizer: {{name: {tok}}}
train_loader:
  name: classification
  dataset: {{local: {root}, split: {split}, text_fields: [sentence], max_seq_len: 16}}
eval_loader:
  name: classification
  dataset: {{local: {root}, split: {split}_val, text_fields: [sentence], max_seq_len: 16, metrics: [accuracy, f1, matthews]}}
max_duration: 40ba
global_train_batch_size: 8
device_train_microbatch_size: 8
precision: fp32
eval_interval: 40ba
save_interval: 0
console_log_interval: 10ba
progress_bar: false
optimizer: {{lr: 0.002}}
scheduler: {{name: constant_with_warmup, t_warmup: 2ba}}
"""


@pytest.mark.slow
def test_glue_style_classifier_warm_starts_from_another_head(tmp_path, minilm_dir):
    tok = minilm_dir
    words = {0: ["awful", "bad", "poor", "dull"], 1: ["great", "good", "superb", "fun"], 2: ["okay", "average"]}
    for split, classes in (("three", 3), ("two", 2)):
        for part, n in (("", 48), ("_val", 16)):
            rows = [{"sentence": f"the film was {words[i % classes][(i // classes) % len(words[i % classes])]} "
                                 f"said reviewer {i}", "label": i % classes} for i in range(n)]
            (tmp_path / f"{split}{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "three.yaml").write_text(GLUE_YAML.format(labels=3, tok=tok, root=tmp_path, split="three"))
    (tmp_path / "two.yaml").write_text(GLUE_YAML.format(labels=2, tok=tok, root=tmp_path, split="two"))
    first = run_cli("train", str(tmp_path / "three.yaml"), f"save_folder={tmp_path / 'mnli'}",
                    "eval_loader.dataset.metrics=[accuracy]")
    assert first.returncode == 0, first.stderr
    second = run_cli("train", str(tmp_path / "two.yaml"), f"save_folder={tmp_path / 'rte'}",
                     f"load_path={tmp_path / 'mnli'}")
    assert second.returncode == 0, second.stderr
    assert "classifier head re-initialized: classifier.weight (2, 128) (checkpoint: (3, 128))" in second.stdout
    metrics = final_metrics(tmp_path / "rte")
    assert metrics["metrics/val/accuracy"] == 1.0
    assert metrics["metrics/val/f1"] == 1.0 and metrics["metrics/val/matthews"] == 1.0
    assert final_metrics(tmp_path / "mnli")["metrics/val/accuracy"] > 0.9


CHAT_EXAMPLES = [{"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": f"A{i}."}]}
                 for i in range(6)]


def test_cli_kind_finetuning(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in CHAT_EXAMPLES))
    ok = run_cli("convert-dataset", str(src), "-o", str(tmp_path / "mds"), "--kind", "finetuning")
    assert ok.returncode == 0, ok.stderr
    assert "records read: 6 = 6 documents written + 0 skipped" in ok.stdout
    bad = run_cli("convert-dataset", str(src), "-o", str(tmp_path / "x"), "--kind", "finetuning", "-t", "tok")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "drop --tokenizer" in bad.stderr


@pytest.mark.slow
def test_finetuning_examples_through_an_s3_bucket(lm_workspace, s3_server, tmp_path):
    """convert-dataset --kind finetuning uploads (compressed) MDS; training fetches it and sees the same rows."""
    ok = run_cli("convert-dataset", str(lm_workspace / "data" / "train.jsonl"), "-o", "s3://corpus/ft", "--kind",
                 "finetuning", "--compression", "zstd")
    assert ok.returncode == 0, ok.stderr
    again = run_cli("convert-dataset", str(lm_workspace / "data" / "train.jsonl"), "-o", "s3://corpus/ft", "--kind",
                    "finetuning")
    assert again.returncode == 1 and "already holds data" in again.stderr
    common = ["max_duration=3ba", "eval_interval=0", "console_log_interval=1ba"]
    local = run_cli("train", str(lm_workspace / "ft.yaml"), f"save_folder={tmp_path / 'local'}", *common)
    assert local.returncode == 0, local.stderr
    remote = run_cli("train", str(lm_workspace / "ft.yaml"), f"save_folder={tmp_path / 'remote'}", *common,
                     "train_loader.dataset.remote=s3://corpus/ft", f"train_loader.dataset.local={tmp_path / 'cache'}")
    assert remote.returncode == 0, remote.stderr
    assert list((tmp_path / "cache" / "train").glob("shard.*.mds"))  # fetched and decompressed
    runs = [[json.loads(line)["loss/train"] for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
            for r in ("local", "remote")]
    assert len(runs[0]) == 3 and runs[0] == runs[1]
    missing = run_cli("train", str(lm_workspace / "ft.yaml"), f"save_folder={tmp_path / 'missing'}", *common,
                      "train_loader.dataset.remote=s3://corpus/nothing", f"train_loader.dataset.local={tmp_path / 'c2'}")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "train_loader.dataset.remote: cannot fetch s3://corpus/nothing/train/index.json" in missing.stderr


@pytest.mark.slow
def test_finetunes_a_local_hugging_face_model_and_its_lora_adapters_load_in_peft(lm_workspace, tmp_path):
    """hf_causal_lm as the starting point: the response loss falls; a LoRA run's adapters load in peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=320)).save_pretrained(tmp_path / "llama")
    rest = LM_YAML.format(root=lm_workspace).split("tokenizer:", 1)[1]
    config = tmp_path / "hf.yaml"
    config.write_text(f"model: {{name: hf_causal_lm, pretrained_model_name_or_path: {tmp_path / 'llama'}}}\n"
                      f"tokenizer:{rest}")
    full = run_cli("train", str(config), f"save_folder={tmp_path / 'full'}", "max_duration=30ba", "eval_interval=0",
                   "console_log_interval=1ba",
                   "optimizer.lr=0.003")
    assert full.returncode == 0, full.stderr
    train = [json.loads(line)["loss/train"] for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert train[-1] < 0.5 * train[0]  # 5.4 -> 2.3 here

    lora = run_cli("train", str(config), f"save_folder={tmp_path / 'lora'}", "max_duration=5ba", "eval_interval=0",
                   "optimizer.lr=0.01", "model.peft_config={r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj, down_proj]}")
    assert lora.returncode == 0, lora.stderr
    export = run_cli("inference-convert", str(tmp_path / "lora"), str(tmp_path / "adapters"), "--adapters-only")
    assert export.returncode == 0, export.stderr
    merged, _ = load_model_from_checkpoint(tmp_path / "lora")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "llama").eval()
    with_peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "llama"),
                                          tmp_path / "adapters").eval()
    ids = torch.randint(0, 320, (2, 16))
    with torch.no_grad():
        assert (base(ids).logits - merged(ids)).abs().max() > 1e-3  # the adapters did something
        torch.testing.assert_close(with_peft(ids).logits, merged(ids), rtol=1e-4, atol=1e-4)
