"""Benchmark: LoRA vs full finetuning of the same model on the same data, through `foundry train`.

Each variant runs in its own process (so peak memory is its own): the same MPT, the same real instruction
data (PubMed abstract -> title, GPT-2 tokenizer, packed rows), the same steps. Printed side by side:
trainable parameters, peak memory (RSS on CPU, allocated on CUDA), tokens/s and the final loss.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from llmfoundry.assets import asset_path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

YAML = """
model:
  name: mpt
  preset: mpt-125m
  d_model: {d_model}
  n_layers: {layers}
  n_heads: 8
  vocab_size: 50257
  max_seq_len: {seq}
  attn_config: {{attn_uses_sequence_id: true}}
tokenizer: {{name: {tok}}}
train_loader:
  name: finetuning
  dataset: {{local: {data}, max_seq_len: {seq}, packing_ratio: auto}}
max_duration: {steps}ba
global_train_batch_size: {batch}
device_train_microbatch_size: {batch}
precision: {precision}
eval_interval: 0
save_interval: 0
console_log_interval: 1ba
progress_bar: false
optimizer: {{name: adamw, lr: 1.0e-4}}
scheduler: {{name: constant_with_warmup}}
"""

VARIANTS = {
    "full": [],
    "lora r=8": ["model.peft_config={r: 8, lora_alpha: 16, target_modules: [Wqkv, out_proj, up_proj, down_proj]}"],
}


def run(config: Path, root: Path, name: str, extra: list[str]) -> dict[str, float]:
    folder = root / re.sub(r"\W", "_", name)
    done = subprocess.run([sys.executable, "-m", "llmfoundry.cli", "train", str(config), f"save_folder={folder}", *extra],
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": ""}, check=False)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr}")
    total = int(re.search(r"training ([\d,]+) parameters", done.stdout).group(1).replace(",", ""))  # type: ignore[union-attr]
    frozen = re.search(r"([\d,]+) of them trainable", done.stdout)
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    rates = [r["throughput/tokens_per_sec"] for r in records[1:]] or [last["throughput/tokens_per_sec"]]
    memory = last.get("memory/peak_allocated_gb", last.get("memory/peak_rss_gb"))
    return {"params": total, "trainable": int(frozen.group(1).replace(",", "")) if frozen else total,
            "memory_gb": memory, "tokens_per_sec": sum(rates) / len(rates), "loss": last["loss/train"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--examples", type=int, default=400)
    args = parser.parse_args()
    import torch

    from scripts.finetune_demo_data import write_titles

    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        root = Path(tmp)
        write_titles(root / "data", args.examples, 0)
        config = root / "bench.yaml"
        config.write_text(YAML.format(d_model=args.d_model, layers=args.layers, seq=args.seq, steps=args.steps,
                                      batch=args.batch, tok=Path(asset_path("gpt2")),
                                      data=root / "data", precision="amp_bf16" if torch.cuda.is_available() else "fp32"))
        results = {name: run(config, root, name, extra) for name, extra in VARIANTS.items()}
    memory = "peak GPU memory allocated" if torch.cuda.is_available() else "peak RSS"
    print(f"MPT d_model={args.d_model} x {args.layers} layers, {args.steps} steps of {args.batch} x {args.seq} tokens "
          f"(packed PubMed abstract->title examples); memory = {memory}")
    print(f"{'variant':10s} {'params':>12s} {'trainable':>12s} {'memory GB':>10s} {'tokens/s':>10s} {'loss':>7s}")
    for name, r in results.items():
        print(f"{name:10s} {r['params']:12,} {r['trainable']:12,} {r['memory_gb']:10.2f} {r['tokens_per_sec']:10,.0f} "
              f"{r['loss']:7.3f}")
    full, lora = results["full"], results["lora r=8"]
    print(f"LoRA/full: trainable {lora['trainable'] / full['trainable']:.2%}, memory {lora['memory_gb'] / full['memory_gb']:.2f}x, "
          f"speed {lora['tokens_per_sec'] / full['tokens_per_sec']:.2f}x")


if __name__ == "__main__":
    main()
