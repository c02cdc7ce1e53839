"""Benchmark: `foundry train` vs a minimal plain-PyTorch loop vs `transformers.Trainer`, same model and tokens.

Each variant runs in its own process (so peak RSS is its own) on the same MDS shards (real PubMed abstracts,
GPT-2 tokenizer) and the same MPT architecture:
  foundry   `foundry train` through the CLI (data loader, checkpoint at the end, metrics, everything)
  plain     the floor of overhead: build_model + AdamW + a for-loop over the same batches
  hf        transformers.Trainer training MptForCausalLM (same config, same tokens)
Printed: tokens/s after warm-up, peak RSS, start-up (command start to the end of the first step), ratios.
Targets: foundry within 5% of plain, >= 1.5x hf, start-up < 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmfoundry.assets import asset_path

REPO = Path(__file__).resolve().parents[2]
START = time.perf_counter()

YAML = """
base: {repo}/yamls/pretrain/_base.yaml
variables: {{data_local: {data}, tokenizer: {tok}, max_seq_len: {seq}, run_name: bench}}
model: {{name: mpt, preset: {preset}, vocab_size: 50257, max_seq_len: {seq}}}
max_duration: {steps}ba
global_train_batch_size: {batch}
device_train_microbatch_size: {batch}
precision: fp32
eval_interval: 0
save_interval: 0
console_log_interval: 1ba
progress_bar: false
autoresume: false
"""


def prepare(root: Path, docs: int, seq: int) -> tuple[Path, Path]:
    from llmfoundry.data.convert import convert_dataset

    tok = Path(asset_path("gpt2"))
    data = root / "data"
    pubmed = Path(asset_path("pubmed")) / "pubmed20n0014.xml.gz"
    convert_dataset([str(pubmed)], str(data), tokenizer=str(tok), max_seq_len=seq, max_docs=docs, progress=False)
    return data, tok


def batches(data: Path, tok: Path, batch: int, seq: int):
    from streaming import StreamingDataset
    from torch.utils.data import DataLoader

    from llmfoundry.data.tokenizer import load_tokenizer
    from llmfoundry.data.text import LMCollator

    dataset = StreamingDataset(local=str(data), split="train", shuffle=True, shuffle_seed=17, batch_size=batch,
                               num_canonical_nodes=1)
    return DataLoader(dataset, batch_size=batch, collate_fn=LMCollator(load_tokenizer(tok), seq), drop_last=True)


def run_plain(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from llmfoundry.config import build
    from llmfoundry.models import ModelConfig, build_model

    torch.manual_seed(17)
    model = build_model(build(ModelConfig, {"name": "mpt", "preset": args.preset, "vocab_size": 50257,
                                            "max_seq_len": args.seq}))
    model.init_weights()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, foreach=True)
    times = []
    for step, batch in enumerate(batches(Path(args.data), Path(args.tok), args.batch, args.seq)):
        if step == args.steps:
            break
        t0 = time.perf_counter()
        n = (batch["labels"] != -100).sum()
        (model(**batch) / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        if step == 0:
            startup = time.perf_counter() - START
    return {"step_s": sum(times[1:]) / len(times[1:]), "startup_s": startup}


def run_hf(args: argparse.Namespace) -> dict[str, float]:
    import torch
    from transformers import MptForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from llmfoundry.config import build
    from llmfoundry.export.hf import hf_config
    from llmfoundry.models import ModelConfig, build_model

    torch.manual_seed(17)
    ours = build_model(build(ModelConfig, {"name": "mpt", "preset": args.preset, "vocab_size": 50257,
                                           "max_seq_len": args.seq}), device="meta")
    model = MptForCausalLM(hf_config(ours, "mpt"))
    samples = [{"input_ids": b["input_ids"][i], "labels": b["input_ids"][i]}
               for step, b in zip(range(args.steps), batches(Path(args.data), Path(args.tok), args.batch, args.seq))
               for i in range(args.batch)]
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):  # noqa: ANN002, ANN003
            marks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, train_dataset=samples, callbacks=[Clock()],
                          args=TrainingArguments(output_dir=out, per_device_train_batch_size=args.batch,
                                                 max_steps=args.steps, learning_rate=6e-4, report_to=[],
                                                 save_strategy="no", logging_strategy="no", use_cpu=True,
                                                 dataloader_num_workers=0, disable_tqdm=True))
        trainer.train()
    gaps = [b - a for a, b in zip(marks, marks[1:])]
    return {"step_s": sum(gaps) / len(gaps), "startup_s": marks[0] - START}


def run_foundry(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        config.write_text(YAML.format(repo=REPO, data=args.data, tok=args.tok, seq=args.seq, preset=args.preset,
                                      steps=args.steps, batch=args.batch))
        run = Path(tmp) / "run"
        proc = subprocess.Popen([sys.executable, "-m", "llmfoundry.cli", "train", str(config), f"save_folder={run}"],
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        metrics = run / "metrics.jsonl"
        while proc.poll() is None and not (metrics.exists() and metrics.read_text().strip()):
            time.sleep(0.02)
        startup = time.perf_counter() - START  # command start to the end of the first step, like the others
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(err)
        records = [json.loads(x) for x in metrics.read_text().splitlines()]
        # per-step tokens/s from the jsonl (window of one step each); skip the first (warm-up) step
        rates = [r["throughput/tokens_per_sec"] for r in records[1:]]
        step_s = args.batch * args.seq / (sum(rates) / len(rates))
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {"step_s": step_s, "startup_s": startup, "rss_gb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["mpt-tiny", "mpt-125m"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--variant", choices=["plain", "hf", "foundry"], help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--tok", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        result = {"plain": run_plain, "hf": run_hf, "foundry": run_foundry}[args.variant](args)
        result.setdefault("rss_gb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data, tok = prepare(Path(tmp), docs=3000, seq=args.seq)
        print(f"CPU, fp32, batch {args.batch} x seq {args.seq}, {args.steps} steps (first excluded), GPT-2 vocab")
        print(f"{'model':10s} {'variant':8s} {'tokens/s':>9s} {'peak RSS GB':>12s} {'start-up s':>11s}")
        for preset in args.presets:
            out = {}
            for variant in ("plain", "foundry", "hf"):
                cmd = [sys.executable, __file__, "--variant", variant, "--preset", preset, "--data", str(data),
                       "--tok", str(tok), "--steps", str(args.steps), "--batch", str(args.batch), "--seq", str(args.seq)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
                if proc.returncode:
                    print(f"{preset} {variant} failed:\n{proc.stderr[-2000:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                out[variant] = r
                print(f"{preset:10s} {variant:8s} {args.batch * args.seq / r['step_s']:9,.0f} {r['rss_gb']:12.2f} "
                      f"{r['startup_s']:11.1f}")
            if {"plain", "foundry", "hf"} <= set(out):
                f, p, h = (out[v]["step_s"] for v in ("foundry", "plain", "hf"))
                print(f"{preset:10s} foundry/plain = {p / f:.3f} (target >= 0.95)   foundry/hf = {h / f:.2f} (target >= 1.5)")


if __name__ == "__main__":
    main()
