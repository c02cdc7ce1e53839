"""Measure what `foundry plan` predicts: peak memory and tokens/s of a real short `foundry train` run on CPU.

The run happens in a fresh subprocess (`python -m llmfoundry.plan.measure CONFIG key=value ...`) that builds
the same `Trainer` the CLI runs (importing transformers, loading the tokenizer and the data, materializing the
model), takes its resident set size minus the bytes of the model's own tensors as the baseline (the process
without the model: interpreter, libraries, tokenizer, data index), then trains. The peak RSS the kernel
recorded for this process (llmfoundry/memory.py: VmHWM, not `ru_maxrss`, which a large parent such as a
test runner inflates) minus the baseline is what training holds at its peak: weights, gradients, optimizer state, activations and
temporaries, plus the small allocations of the loop and logger. glibc's malloc is told to serve every
allocation of 64 KiB or more with its own mmap (MALLOC_MMAP_THRESHOLD_, which also stops the threshold from
drifting upwards), so freed tensors leave the RSS at once and the peak RSS is the peak of live tensors rather
than of a fragmented heap. Linux only.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from llmfoundry.memory import peak_rss_bytes, rss_bytes

MMAP_THRESHOLD = 65536


@dataclass
class Measured:
    peak_bytes: int
    """Peak RSS during training minus the RSS right before it."""
    tokens_per_s: float
    """Median of the logged throughput after the first log step (which includes start-up); the median, so that
    one step slowed by another process on a shared machine does not move it."""
    seconds: float
    """Wall time of train() (building the model and data, training, the final checkpoint)."""
    steps: int


def _child(config: str, overrides: list[str]) -> None:
    import time

    import torch

    from llmfoundry.config import load_typed
    from llmfoundry.config.schema import TrainConfig
    from llmfoundry.distributed import shutdown
    from llmfoundry.train.loop import Trainer

    cfg, loaded = load_typed(TrainConfig, config, overrides)
    (torch.ones(256, 256) @ torch.ones(256, 256)).sum()  # start the thread pool
    start = time.perf_counter()
    trainer = Trainer(cfg, loaded)  # imports transformers, loads the tokenizer and data, materializes the model
    weights = sum(t.nbytes for t in trainer.model.state_dict().values())
    baseline = rss_bytes() - weights  # the process without the model: what the prediction leaves out
    try:
        trainer.fit()
    finally:
        shutdown()
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    rates = [json.loads(line).get("throughput/tokens_per_sec")
             for line in (Path(cfg.save_folder) / "metrics.jsonl").read_text().splitlines()]  # type: ignore[arg-type]
    rates = [r for r in rates if r is not None]
    steady = rates[1:] or rates
    print(json.dumps({"peak_bytes": peak - baseline, "tokens_per_s": statistics.median(steady),
                      "seconds": seconds, "steps": len(rates)}))


def measure(config: str | Path, overrides: list[str], *, timeout: float = 900) -> Measured:
    """Train `config` with `overrides` in a subprocess (one CPU process) and measure it."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "llmfoundry.plan.measure", str(config), *overrides], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {config} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Measured(**result)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2:])
