"""The numbers a person looks for first, from a run's records: shared by the console summary and the report."""

from __future__ import annotations

import math
from statistics import fmean

from llmfoundry.report.runs import Run


def _mean(run: Run, key: str) -> float | None:
    values = run.series(key)[1]
    return fmean(values) if values else None


def run_numbers(run: Run) -> dict[str, str]:
    """Label -> text: final losses and perplexities (with their step), tokens, mean throughput/MFU, peak memory."""
    last = run.last()
    out: dict[str, str] = {}
    if "step" in (run.records[-1] if run.records else {}):
        out["steps"] = f"{run.records[-1]['step']:,}"
    if "tokens" in last:
        out["tokens"] = f"{int(last['tokens'][1]):,}"
    for key, label in (("loss/train", "train loss"), ("loss/val", "validation loss")):
        if key in last:
            step, loss = last[key]
            out[label] = f"{loss:.4f} (perplexity {math.exp(min(loss, 50)):.2f}) at step {step:,}"
    rate = _mean(run, "throughput/tokens_per_sec")
    if rate is not None:
        out["mean tokens/s"] = f"{rate:,.0f}"
    mfu = _mean(run, "throughput/mfu")
    out["mean MFU"] = f"{100 * mfu:.1f}%" if mfu is not None else "n/a (no known peak FLOP/s for this device)"
    for key, label in (("memory/peak_allocated_gb", "peak memory (allocated on the GPU)"),
                       ("memory/peak_rss_gb", "peak memory (process RSS)")):
        if key in last:
            out[label] = f"{max(run.series(key)[1]):.2f} GiB"
    if "gauntlet/average" in last:
        out["gauntlet average"] = f"{last['gauntlet/average'][1]:.4f}"
    return out

