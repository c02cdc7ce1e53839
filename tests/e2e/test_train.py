"""foundry train against its own references: split-invariance, 2 processes vs 1, killed-and-resumed vs not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llmfoundry.checkpoint.reader import load_model_from_checkpoint
from tests.conftest import REPO, run_cli, toy_corpus

TINY = """
base: {base}
variables:
  data_local: {data}
  tokenizer: {tok}
  max_seq_len: 32
  run_name: test
model:
  name: mpt
  preset: mpt-tiny
  d_model: 64
  vocab_size: 512
  attn_config:
    attn_uses_sequence_id: true
max_duration: 6ba
global_train_batch_size: 8
device_train_microbatch_size: 8
precision: fp32
eval_interval: 0
save_interval: 3ba
console_log_interval: 1ba
progress_bar: false
scheduler:
  t_warmup: 2ba
optimizer:
  lr: 0.01
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A real tokenizer and MDS dataset made with our own verbs from generated text."""
    from llmfoundry.data.convert import convert_dataset

    root = tmp_path_factory.mktemp("train")
    corpus, _ = toy_corpus(root)
    convert_dataset([str(corpus)], str(root / "data"), tokenizer=str(root / "tok"), max_seq_len=32,
                    val_fraction=0.1, progress=False)
    config = root / "tiny.yaml"
    config.write_text(TINY.format(base=REPO / "yamls" / "pretrain" / "_base.yaml", data=root / "data", tok=root / "tok"))
    return root, config


def losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss/train" in record:
            out[record["step"]] = record["loss/train"]
    return out


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_model_from_checkpoint(run)[0].state_dict()


def train_in_process(config: Path, *overrides: str) -> None:
    from llmfoundry.config import load_typed
    from llmfoundry.config.schema import TrainConfig
    from llmfoundry.train.loop import train

    cfg, loaded = load_typed(TrainConfig, config, list(overrides))
    train(cfg, loaded)


@pytest.mark.slow
def test_microbatch_split_does_not_change_training(workspace):
    root, config = workspace
    runs = {}
    for micro in (8, 2, 1):
        run = root / f"micro{micro}"
        # lr 1e-3: Adam divides by sqrt(v), which turns fp32 summation-order noise in near-zero gradients
        # into update differences proportional to lr; this test is about the gradient math.
        train_in_process(config, f"save_folder={run}", f"device_train_microbatch_size={micro}", "max_duration=3ba",
                         "save_interval=0", "optimizer.lr=0.001")
        runs[micro] = run
    base_losses, base_weights = losses(runs[8]), weights(runs[8])
    for micro in (2, 1):
        assert all(abs(base_losses[s] - v) < 1e-6 for s, v in losses(runs[micro]).items())
        other = weights(runs[micro])
        assert max((base_weights[k] - other[k]).abs().max().item() for k in base_weights) < 1e-6


@pytest.mark.slow
def test_two_processes_match_one_and_checkpoint_reshards(workspace):
    root, config = workspace
    one, two = root / "one", root / "two"
    train_in_process(config, f"save_folder={one}", "max_duration=5ba", "save_interval=0", "optimizer.lr=0.001")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m",
         "llmfoundry.cli", "train", str(config), f"save_folder={two}", "max_duration=5ba", "save_interval=0",
         "device_train_microbatch_size=4", "optimizer.lr=0.001"],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    l1, l2 = losses(one), losses(two)
    assert sorted(l1) == sorted(l2) == [1, 2, 3, 4, 5]
    assert all(abs(l1[s] - l2[s]) < 1e-5 for s in l1)
    # the 2-process (FSDP-sharded) checkpoint loads in one process and matches the 1-process weights
    w1, w2 = weights(one), weights(two)
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4


@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted_run(workspace):
    root, config = workspace
    straight, resumed = root / "straight", root / "resumed"
    args = [str(config), "max_duration=30ba", "save_interval=3ba"]  # long enough to be killed mid-run
    result = run_cli("train", *args, f"save_folder={straight}")
    assert result.returncode == 0, result.stderr
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "llmfoundry.cli", "train", *args, f"save_folder={resumed}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = resumed / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and latest.read_text().strip() >= "step-00000006":
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = latest.read_text().strip()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"resumed at step {int(killed_at[5:])}" in result.stdout
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise
    la, lb = losses(straight), losses(resumed)
    assert all(la[s] == lb[s] for s in range(int(killed_at[5:]) + 1, 31))
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir() if p.name.startswith("step")) == [
        "step-00000027", "step-00000030"]  # save_num_checkpoints_to_keep: 2


def test_bad_configs_fail_fast_with_one_line(workspace, tmp_path):
    root, config = workspace
    cases = [
        (["global_train_batch_size=8", "device_train_microbatch_size=3"], "does not divide the per-process batch 8"),
        ([f"variables.tokenizer={tmp_path}/missing"], "tokenizer directory does not exist"),
        ([f"variables.data_local={tmp_path}"], "has no index.json"),
        (["max_duration=10 steps"], "max_duration: expected a time string"),
        (["model.attn_config.attn_impl=flash"], "attn_impl: 'flash' cannot run on cpu"),
    ]
    for overrides, message in cases:
        result = run_cli("train", str(config), f"save_folder={tmp_path}/run", *overrides)
        assert result.returncode == 1, (overrides, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_refuses_to_clobber_checkpoints_and_durations_in_tokens(workspace):
    root, config = workspace
    run = root / "tokens"
    # 2 steps of 8 x 32 tokens = 512 tokens; 300tok rounds up to 2 steps
    result = run_cli("train", str(config), f"save_folder={run}", "max_duration=300tok", "save_interval=0",
                     "autoresume=false")
    assert result.returncode == 0, result.stderr
    assert max(losses(run)) == 2
    result = run_cli("train", str(config), f"save_folder={run}", "max_duration=300tok", "autoresume=false")
    assert result.returncode == 1 and "already holds checkpoints" in result.stderr


def test_nan_loss_stops_with_a_clear_message(workspace):
    root, config = workspace
    run = root / "nan"
    result = run_cli("train", str(config), f"save_folder={run}", "optimizer.lr=1e30", "scheduler.t_warmup=0ba",
                     "algorithms.gradient_clipping=null", "max_duration=6ba", "save_interval=1ba")
    assert result.returncode == 1
    assert "loss is nan" in result.stderr or "loss is inf" in result.stderr
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert latest == "step-00000001"  # the last checkpoint with a finite loss; nothing written after it
    assert all(torch.isfinite(v).all() for v in weights(run).values())


def test_icl_tasks_run_during_training(workspace, icl_dir):
    root, config = workspace
    lines = (icl_dir / "copa.jsonl").read_text().splitlines()[:8]
    (root / "copa.jsonl").write_text("\n".join(lines) + "\n")
    run = root / "icl"
    tasks = f"[{{label: copa, dataset_uri: {root}/copa.jsonl, icl_task_type: multiple_choice}}]"
    gauntlet = "{categories: [{name: reasoning, benchmarks: [{name: copa, num_fewshot: 0, random_baseline: 0.5}]}]}"
    result = run_cli("train", str(config), f"save_folder={run}", "max_duration=2ba", "eval_interval=2ba",
                     f"icl_tasks={tasks}", f"eval_gauntlet={gauntlet}", "save_interval=0", "icl_seq_len=256")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if "icl/copa/0-shot/acc" in r]
    assert evaluated and 0 <= evaluated[-1]["icl/copa/0-shot/acc"] <= 1 and "gauntlet/reasoning" in evaluated[-1]


@pytest.mark.slow
def test_trains_from_an_s3_bucket(workspace, s3_server, tmp_path):
    """Shards uploaded by convert-dataset to an S3-protocol server stream into training via a local cache."""
    from llmfoundry.data.convert import convert_dataset

    root, config = workspace
    convert_dataset([str(root / "corpus")], "s3://corpus/tiny", tokenizer=str(root / "tok"), max_seq_len=32,
                    val_fraction=0.1, progress=False)
    local, remote = tmp_path / "local", tmp_path / "remote"
    common = ["max_duration=2ba", "save_interval=0", "train_loader.dataset.shuffle=false"]
    assert run_cli("train", str(config), f"save_folder={local}", *common).returncode == 0
    result = run_cli("train", str(config), f"save_folder={remote}", *common,
                     "train_loader.dataset.remote=s3://corpus/tiny", f"train_loader.dataset.local={tmp_path}/cache")
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "cache" / "train").glob("shard.*.mds*"))  # really downloaded
    assert losses(local) == losses(remote)


def test_trains_a_local_hugging_face_model(workspace, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    root, config = workspace
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_head=2, n_layer=2, n_positions=64, vocab_size=512)).save_pretrained(
        tmp_path / "gpt2")
    text = config.read_text()
    start, end = text.index("model:"), text.index("max_duration:")
    hf_config = tmp_path / "hf.yaml"
    hf_config.write_text(text[:start] + f"model:\n  name: hf_causal_lm\n  pretrained_model_name_or_path: {tmp_path}/gpt2\n"
                         + text[end:])
    result = run_cli("train", str(hf_config), f"save_folder={tmp_path}/run", "max_duration=3ba", "save_interval=0")
    assert result.returncode == 0, result.stderr
    steps = losses(tmp_path / "run")
    assert sorted(steps) == [1, 2, 3] and steps[3] < steps[1]


def test_tensorboard_mlflow_and_wandb_receive_every_logged_step(workspace, monkeypatch):
    """Each optional sink gets the same values as metrics.jsonl, read back with the sink's own reader."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_SILENT", "true")
    root, config = workspace
    run = root / "loggers"
    train_in_process(config, f"save_folder={run}", "max_duration=3ba", "save_interval=0",
                     "loggers={tensorboard: {}, mlflow: {experiment_name: test}, wandb: {mode: offline}}")
    expected = losses(run)
    assert sorted(expected) == [1, 2, 3]

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {e.step: e.value for e in events.Scalars("loss/train")} == pytest.approx(expected, rel=1e-6)

    client = MlflowClient((run / "mlruns").as_uri())
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    history = client.get_metric_history(mlflow_run.info.run_id, "loss/train")
    assert {m.step: m.value for m in history} == pytest.approx(expected, rel=1e-6)
    assert mlflow_run.data.params["optimizer.lr"] == "0.01"

    # W&B offline runs are protobuf records; every logged value is stored as its JSON text
    (record_file,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    raw = record_file.read_bytes()
    assert all(json.dumps(v).encode() in raw for v in expected.values())


@pytest.mark.slow
def test_long_context_continuation_with_activation_checkpointing(workspace):
    """Pretrained at 32 tokens, continued at 128 (ALiBi extrapolates); recomputing blocks changes nothing."""
    from llmfoundry.data.convert import convert_dataset

    root, config = workspace
    convert_dataset([str(root / "corpus")], str(root / "data128"), tokenizer=str(root / "tok"), max_seq_len=128,
                    val_fraction=0.1, progress=False)
    short = root / "short-context"
    train_in_process(config, f"save_folder={short}", "max_duration=2ba", "save_interval=0")
    runs = {}
    for mode in ("none", "full", "selective"):
        runs[mode] = root / f"long-{mode}"
        train_in_process(config, f"save_folder={runs[mode]}", f"load_path={short}", "max_duration=3ba",
                         "save_interval=0", f"variables.data_local={root / 'data128'}", "variables.max_seq_len=128",
                         "model.max_seq_len=128", f"fsdp_config.activation_checkpointing={mode}", "optimizer.lr=0.001")
    reference, ref_weights = losses(runs["none"]), weights(runs["none"])
    assert len(reference) == 3 and all(v == v and v < 20 for v in reference.values())
    for mode in ("full", "selective"):
        assert all(abs(reference[s] - v) < 1e-6 for s, v in losses(runs[mode]).items())
        other = weights(runs[mode])
        assert max((ref_weights[k] - other[k]).abs().max().item() for k in ref_weights) < 1e-6


@pytest.mark.slow
def test_data_loader_workers_do_not_change_the_samples(workspace):
    root, config = workspace
    runs = {}
    for workers in (0, 2):
        runs[workers] = root / f"workers{workers}"
        train_in_process(config, f"save_folder={runs[workers]}", "max_duration=4ba", "save_interval=0",
                         f"train_loader.num_workers={workers}")
    assert losses(runs[0]) == losses(runs[2])
