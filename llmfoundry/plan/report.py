"""The console table of a plan (rich); `--json` prints `Plan.to_json()` instead."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from llmfoundry.plan.estimate import GIB, Plan, count, hours

MEMORY_ROWS = (
    ("weights", "weights (fp32 master copy)"),
    ("gradients", "gradients (fp32)"),
    ("optimizer", "optimizer state"),
    ("working_copies", "working copies (bf16 casts / gathered FSDP params)"),
    ("activations", "activations (at the configured checkpointing)"),
    ("mask", "attention mask (dense bias)"),
    ("loss", "loss (saved grads + one chunk)"),
    ("batch", "batch"),
    ("optimizer_step", "optimizer step temporaries"),
)


def _gib(n: float) -> str:
    return f"{n / GIB:,.2f} GiB"


def render(p: Plan, console: Console | None = None) -> None:
    """Print the plan as three tables: run, memory per GPU, speed and cost."""
    console = console or Console()
    run = Table(title=f"foundry plan: {p.config}", show_header=False, title_justify="left")
    run.add_column(style="bold")
    run.add_column()
    run.add_row("model", f"{p.family}: {count(p.parameters)} parameters ({count(p.non_embedding_parameters)} "
                "without embeddings)")
    run.add_row("FLOPs per token", f"{p.flops_per_token:.3e} (6N + 12·L·d·T, the trainer's MFU formula)")
    run.add_row("batch", f"{p.global_batch} x {p.seq_len} tokens; microbatch {p.microbatch} x {p.accumulation} "
                f"per GPU")
    run.add_row("max_duration", f"{p.steps:,} steps = {count(p.tokens)} tokens")
    ratio = p.tokens / p.chinchilla_tokens
    run.add_row("Chinchilla-optimal", f"{count(p.chinchilla_tokens)} tokens (20 per parameter); this run is "
                f"{ratio:.2f}x that")
    run.add_row("hardware", f"{p.gpus} x {p.device}, {p.precision}, sharding {p.sharding}, activation "
                f"checkpointing {p.activation_checkpointing}")
    console.print(run)
    if p.memory is not None:
        mem = Table(title="memory per GPU", title_justify="left")
        mem.add_column("term")
        mem.add_column("size", justify="right")
        for key, label in MEMORY_ROWS:
            if p.memory[key]:
                mem.add_row(label, _gib(p.memory[key]))
        mem.add_row(f"[bold]peak ({p.memory['phase']})", f"[bold]{_gib(p.memory['peak'])}")
        mem.add_row("usable on the GPU", _gib(p.usable_bytes_per_gpu))
        verdict = "[green]fits" if p.fits else "[red]does not fit"
        mem.add_row("verdict", verdict)
        mem.add_row("peak with checkpointing none / selective / full",
                    " / ".join(_gib(p.peak_by_ac[k]) for k in ("none", "selective", "full")))
        mem.add_row("largest microbatch that fits", f"{p.largest_microbatch} (dividing the per-GPU batch: "
                    f"{p.largest_dividing_microbatch})")
        console.print(mem)
    speed = Table(title="speed and cost", show_header=False, title_justify="left")
    speed.add_column(style="bold")
    speed.add_column()
    speed.add_row("predicted throughput", f"{p.tokens_per_s:,.0f} tokens/s ({p.tokens_per_s / p.gpus:,.0f} per GPU) "
                  f"at MFU {p.mfu:.0%} of {p.peak_flops / 1e12:,.0f} TFLOP/s")
    speed.add_row("wall time", f"{hours(p.seconds)} ({p.gpu_hours:,.0f} GPU-hours)")
    if p.cost is not None:
        speed.add_row("cost", f"${p.cost:,.0f}")
    console.print(speed)
    for note in p.notes:
        console.print(f"note: {note}")
