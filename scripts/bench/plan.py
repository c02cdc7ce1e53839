"""Benchmark: `foundry plan`'s predictions against real `foundry train` runs, and LLM Foundry's published table.

1. Memory: for configs spanning model sizes, sequence lengths, microbatches (with accumulation) and activation
   checkpointing, the predicted peak per process against the measured one (peak RSS of a real short CPU run
   minus the process baseline; llmfoundry/plan/measure.py says exactly how). Data: real PubMed abstracts with
   the GPT-2 tokenizer (the `pubmed` and `gpt2` assets).
2. Time: the measured FLOP/s of a short run (its tokens/s x FLOPs per token) taken as the CPU's "peak" at MFU 1;
   the plan then predicts the training time of a 3x longer run of the same config (short runs before and after
   it bracket the machine's load drift).
3. LLM Foundry's throughput table (scripts/train/benchmarking/README.md): our parameter count and tokens/s
   at their published MFU on 8 x A100-80GB / H100, side by side with their figures.
Run: make bench-plan (about 17 minutes on 2 cores at load 6-19: memory 12.5, time 4-5, table seconds);
--part memory|time|table runs one part.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from llmfoundry.assets import asset_path

REPO = Path(__file__).resolve().parents[2]

YAML = """
base: {repo}/yamls/pretrain/_base.yaml
variables: {{data_local: {data}, tokenizer: {tok}, max_seq_len: 512, run_name: bench-plan}}
model: {{name: mpt, preset: mpt-125m, vocab_size: 50257}}
max_duration: 2ba           # the second step is the peak: it has optimizer state
global_train_batch_size: 8
device_train_microbatch_size: 8
precision: fp32
eval_interval: 0
eval_loader: null
save_interval: 0
console_log_interval: 1ba
progress_bar: false
autoresume: false
"""

LLAMA = ["model.norm_type=rmsnorm", "model.learned_pos_emb=false", "model.tie_word_embeddings=false",
         "model.attn_config.alibi=false", "model.attn_config.rope=true", "model.attn_config.kv_n_heads=2",
         "model.ffn_config.ffn_type=mptglu", "model.ffn_config.ffn_act_fn.name=silu"]


def _shape(d: int, layers: int, heads: int) -> list[str]:
    return [f"model.d_model={d}", f"model.n_layers={layers}", f"model.n_heads={heads}"]


def _run(seq: int, batch: int, micro: int, ac: str = "false") -> list[str]:
    return [f"variables.max_seq_len={seq}", f"global_train_batch_size={batch}",
            f"device_train_microbatch_size={micro}", f"fsdp_config.activation_checkpointing={ac}"]


# (name, overrides): sizes 1.6M-25M non-embedding parameters (+ the 50k-token output layer), seq 128-512,
# microbatch 2-16 (one with accumulation), activation checkpointing none / full / selective
CONFIGS = [
    ("d256 L4, seq 128, mb 16", _shape(256, 4, 4) + _run(128, 16, 16)),
    ("d512 L4, seq 256, mb 4", _shape(512, 4, 8) + _run(256, 4, 4)),
    ("d512 L8, seq 512, mb 2, AC full", _shape(512, 8, 8) + _run(512, 2, 2, "full")),
    ("d384 L6, seq 256, mb 8, AC selective", _shape(384, 6, 6) + _run(256, 8, 8, "selective")),
    ("d512 L8, seq 128, mb 4", _shape(512, 8, 8) + _run(128, 4, 4)),
    ("d256 L4, seq 256, mb 4 x 2 accumulated, AC full", _shape(256, 4, 4) + _run(256, 8, 4, "full")),
    ("llama-style d256 L4 (RoPE, GQA, SwiGLU), seq 256, mb 4", _shape(256, 4, 4) + _run(256, 4, 4) + LLAMA),
]
PRICE = {"a100-80g": 1.80, "h100": 2.50}  # $/GPU-hour assumed for the cost column (cloud list prices vary)


def prepare(root: Path) -> Path:
    from llmfoundry.data.convert import convert_dataset

    root.mkdir(parents=True, exist_ok=True)
    tok = Path(asset_path("gpt2"))
    pubmed = Path(asset_path("pubmed")) / "pubmed20n0014.xml.gz"
    convert_dataset([str(pubmed)], str(root / "data"), tokenizer=str(tok), max_seq_len=512, max_docs=1500,
                    progress=False)
    config = root / "bench.yaml"
    config.write_text(YAML.format(repo=REPO, data=root / "data", tok=tok))
    return config


def _plan(config: Path, overrides: list[str], device=None, mfu: float = 1.0):
    from llmfoundry.config import load_typed
    from llmfoundry.config.schema import TrainConfig
    from llmfoundry.devices import Device
    from llmfoundry.plan.estimate import plan

    cfg, _ = load_typed(TrainConfig, config, overrides)
    device = device or Device("cpu", "this CPU", 1e12, None, 1e15, 0, "none")
    return plan(cfg, config=str(config), gpus=1, device=device, mfu=mfu, cuda=False)


def memory(root: Path) -> None:
    from llmfoundry.plan.measure import measure

    config = prepare(root)
    print("memory: predicted peak per process vs measured (peak RSS minus the baseline)")
    for i, (name, overrides) in enumerate(CONFIGS):
        overrides = overrides + [f"save_folder={root}/run{i}"]
        predicted = _plan(config, overrides).memory
        measured = measure(config, overrides)
        mib = 2**20
        print(f"| {name} | {predicted['peak'] / mib:,.0f} MiB ({predicted['phase']}) | "
              f"{measured.peak_bytes / mib:,.0f} MiB | {predicted['peak'] / measured.peak_bytes - 1:+.1%} |", flush=True)


def timing(root: Path) -> None:
    """A short run gives the CPU's FLOP/s (= the peak at MFU 1); the plan then predicts the training time of a 3x
    longer run of the same config. This machine is shared and its load drifts, so the short run is repeated right
    after the long one: the two FLOP/s figures bracket the drift, and their mean is the peak the plan uses."""
    from llmfoundry.devices import Device
    from llmfoundry.plan.measure import measure

    config = prepare(root)
    print("\ntime: predicted from 3-step runs' FLOP/s (before | after), against the 9-step run measured between them")
    name, overrides = CONFIGS[0]
    short = [*overrides, "max_duration=3ba"]
    longer = [*overrides, "max_duration=9ba"]
    flops_per_token = _plan(config, overrides).flops_per_token
    before = measure(config, [*short, f"save_folder={root}/before"])
    measured = measure(config, [*longer, f"save_folder={root}/long"])
    after = measure(config, [*short, f"save_folder={root}/after"])
    rates = [before.tokens_per_s * flops_per_token, after.tokens_per_s * flops_per_token]
    cpu = Device("cpu", "this CPU", sum(rates) / 2, None, 1e15, 0, "none")
    predicted = _plan(config, longer, device=cpu)
    train_s = predicted.tokens / measured.tokens_per_s
    print(f"| {name} | {rates[0] / 1e9:.1f} / {rates[1] / 1e9:.1f} GFLOP/s | {predicted.seconds:.0f} s | "
          f"{train_s:.0f} s | {predicted.seconds / train_s - 1:+.1%} | {measured.seconds:.0f} s |", flush=True)


def foundry_table() -> None:
    from llmfoundry.config import build
    from llmfoundry.models import ModelConfig, build_model
    from llmfoundry.devices import device
    from llmfoundry.plan.published import RUNS

    print("\n| model | GPUs | their MFU | their params | our params | their tok/s | our tok/s at their MFU | ratio | "
          "Chinchilla tokens | days (ours) | days (theirs) | cost (ours) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in RUNS:
        model = build_model(build(ModelConfig, run.model_config(), key="model"), device="meta")
        spec = device(run.gpu)
        rate = run.gpus * spec.bf16_flops * run.mfu / model.flops_per_token(2048)
        tokens = 20 * model.num_params()
        ours, theirs = tokens / rate / 86400, tokens / run.tokens_per_s / 86400
        cost = ours * 24 * run.gpus * PRICE[run.gpu]
        print(f"| {run.model} | {run.gpus} x {run.gpu} | {run.mfu:.2%} | {run.parameters / 1e6:,.1f}M | "
              f"{model.num_params() / 1e6:,.1f}M | {run.tokens_per_s:,} | {rate:,.0f} | "
              f"{rate / run.tokens_per_s:.3f} | {tokens / 1e9:,.1f}B | {ours:,.2f} | {theirs:,.2f} | ${cost:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["memory", "time", "table", "all"], default="all",
                        help="memory (7 training runs), time (3 runs), table (LLM Foundry's rows, no training).")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("memory", "all"):
            memory(Path(tmp) / "memory")
        if args.part in ("time", "all"):
            timing(Path(tmp) / "time")
    if args.part in ("table", "all"):
        foundry_table()
    print(f"\n(bench-plan took {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
