"""Fuzz-suite fixtures: one tiny real setup (tokenizer, MDS data, exported model) per session, and the tally
of generated cases that `pytest` prints at the end ("fuzz: N generated cases, M held")."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import toy_corpus

TALLY: Counter[str] = Counter()

BASE = """\
model:
  name: mpt_causal_lm
  d_model: 32
  n_heads: 2
  n_layers: 1
  max_seq_len: 32
  vocab_size: 512
  attn_config:
    attn_impl: torch
tokenizer:
  name: {tok}
train_loader:
  name: text
  dataset:
    local: {data}
    split: train
    max_seq_len: 32
eval_loader:
  name: text
  dataset:
    local: {data}
    split: val
    max_seq_len: 32
max_duration: 2ba
global_train_batch_size: 4
device_train_microbatch_size: 4
precision: fp32
eval_interval: 0
save_interval: 0
progress_bar: false
log_to_console: false
save_folder: {run}
"""


def record(kind: str, held: bool) -> None:
    """Count one generated case of `kind` (config, override, file, ...) and whether it held."""
    TALLY[f"{kind}:run"] += 1
    TALLY[f"{kind}:held"] += int(held)


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 (pytest's hook signature)
    kinds = sorted({k.split(":")[0] for k in TALLY})
    if not kinds:
        return
    run = sum(TALLY[f"{k}:run"] for k in kinds)
    held = sum(TALLY[f"{k}:held"] for k in kinds)
    parts = ", ".join(f"{k} {TALLY[f'{k}:held']}/{TALLY[f'{k}:run']}" for k in kinds)
    terminalreporter.write_line(f"fuzz: {run} generated cases run, {held} held ({held / run:.1%}): {parts}")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A real tokenizer and real MDS data (32-token samples), and a valid training yaml using them."""
    from llmfoundry.data.convert import convert_dataset

    root = tmp_path_factory.mktemp("fuzz")
    corpus, tok = toy_corpus(root)
    convert_dataset([str(corpus)], str(root / "data"), tokenizer=str(tok), max_seq_len=32, val_fraction=0.2,
                    progress=False)
    base = root / "base.yaml"
    base.write_text(BASE.format(tok=tok, data=root / "data", run=root / "run"))
    assert json.loads((root / "data" / "conversion.json").read_text())["max_seq_len"] == 32
    return {"root": root, "corpus": corpus, "tok": tok, "data": root / "data", "base": base}
