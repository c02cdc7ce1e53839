"""Property: any mistake in a training config, in a file or an override, is exit 1 with exactly one line per
mistake, naming where it was set and the key, and no traceback; found before any model or data is built.

The mistakes are generated from the schema (tests/fuzz/schema_cases.py): wrong types and containers, values
outside each field's declared range, unknown keys; one to three at a time, on unrelated keys, injected into
a valid config of a real tiny setup and run through the real CLI entry in-process (typer's CliRunner).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from llmfoundry.cli import app
from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.validate import check_field
from tests.fuzz.conftest import BASE, record
from tests.fuzz.schema_cases import Leaf, leaves, out_of_range, wrong_type

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_BASE_RAW = yaml.safe_load(BASE.format(tok="t", data="d", run="r"))
LEAVES = leaves(TrainConfig, _BASE_RAW)
# (key, strategy of bad values, kind) for every field that has some bad value to give
CANDIDATES = [(leaf, strategy, kind) for leaf in LEAVES
              for kind, strategy in (("type", wrong_type(leaf)), ("range", out_of_range(leaf)))
              if not strategy.is_empty]
MAPPINGS = [""] + [leaf.key for leaf in LEAVES if leaf.is_mapping]


def _related(a: str, b: str) -> bool:
    """Keys where one mistake hides the other: the same key, nested keys, or siblings of a `name` (a wrong
    family/loader kind leaves its fields unchecked) or of a `preset` (expanded before the fields are read)."""
    if a == b or a.startswith(b + ".") or b.startswith(a + "."):
        return True
    for x, y in ((a, b), (b, a)):
        parent, _, last = x.rpartition(".")
        if last in ("name", "preset") and (y.startswith(parent + ".") if parent else True):
            return True
    return False


@st.composite
def mistakes(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """One to three (key, bad value) pairs on unrelated keys."""
    chosen: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 4)) == 0:
            parent = draw(st.sampled_from(MAPPINGS))
            name = "zz" + draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6))
            key, value = (f"{parent}.{name}" if parent else name), 1
        else:
            leaf, strategy, _ = draw(st.sampled_from(CANDIDATES))
            key, value = leaf.key, draw(strategy)
        if not any(_related(key, k) for k, _ in chosen):
            chosen.append((key, value))
    return chosen


def _yaml_value(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    return json.dumps(value)  # JSON is YAML flow syntax


def _nested(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _check(result: Any, pairs: list[tuple[str, Any]], source: str) -> None:
    assert isinstance(result.exception, SystemExit), f"not a clean exit: {result.exception!r}\n{result.stderr}"
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(pairs), f"{len(pairs)} mistakes, {len(lines)} lines:\n{result.stderr}"
    reported = []
    for line in lines:
        assert line.startswith(f"error: {source}: "), line
        reported.append(line.removeprefix(f"error: {source}: ").split(": ", 1)[0])
    for key, _ in pairs:
        assert any(r == key or r.startswith((key + ".", key + "[")) for r in reported), (key, lines)


@SETTINGS
@given(pairs=mistakes(), in_file=st.booleans())
def test_config_mistakes_are_one_line_each(tiny: dict[str, Path], tmp_path_factory: Any, pairs: list[tuple[str, Any]],
                                           in_file: bool) -> None:
    if in_file:
        overlay = tmp_path_factory.mktemp("overlay") / "bad.yaml"
        overlay.write_text(yaml.safe_dump({"base": str(tiny["base"]), **_nested(pairs)}))
        args, source = ["train", str(overlay)], str(overlay)
    else:
        args = ["train", str(tiny["base"]), *(f"{k}={_yaml_value(v)}" for k, v in pairs)]
        source = "command line"
    result = CliRunner().invoke(app, args)
    held = False
    try:
        _check(result, pairs, source)
        held = True
    finally:
        record("file" if in_file else "override", held)


def test_the_base_config_is_valid(tiny: dict[str, Path]) -> None:
    """The cases above fail because of their mistakes, not because the base is broken."""
    from llmfoundry.config import load_typed
    from llmfoundry.distributed import DistInfo
    from llmfoundry.train.preflight import preflight

    import torch

    cfg, loaded = load_typed(TrainConfig, tiny["base"])
    assert preflight(cfg, DistInfo(0, 1, 0, torch.device("cpu")), loaded.origin) == (4, 1)


def test_the_walk_reaches_every_kind_of_field() -> None:
    """The generator covers the schema: ranges, literals, durations, lists, nested and optional sections."""
    keys = {leaf.key for leaf in LEAVES}
    for key in ("optimizer.lr", "optimizer.betas", "model.n_heads", "model.attn_config.attn_impl", "seed",
                "train_loader.num_workers", "eval_loader.dataset.max_seq_len", "max_duration",
                "fsdp_config.sharding_strategy", "algorithms.gradient_clipping.clipping_threshold",
                "model.peft_config.r", "loggers.wandb.mode"):
        assert key in keys, key
    ranged = [leaf for leaf, _, kind in CANDIDATES if kind == "range"]
    assert len(ranged) >= 40, len(ranged)


def _dataclasses(cls: type, seen: set[type]) -> None:
    if cls in seen:
        return
    seen.add(cls)
    for tp in typing.get_type_hints(cls).values():
        stack = [tp]
        while stack:
            t = stack.pop()
            stack.extend(typing.get_args(t))
            if dataclasses.is_dataclass(t) and isinstance(t, type):
                _dataclasses(t, seen)


def test_defaults_satisfy_their_own_constraints() -> None:
    seen: set[type] = set()
    _dataclasses(TrainConfig, seen)
    assert len(seen) > 20
    for cls in seen:
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                continue
            assert check_field(f.metadata, default) is None, (cls.__name__, f.name, default)


@pytest.mark.parametrize("leaf", [leaf for leaf in LEAVES if leaf.metadata], ids=lambda leaf: leaf.key)
def test_each_range_refuses_its_edge_and_takes_its_bound(leaf: Leaf) -> None:
    """The boundary itself: ge/le bounds are allowed, gt/lt bounds and the `ne` value refused."""
    rules = leaf.metadata
    for bound, allowed in (("ge", True), ("le", True), ("gt", False), ("lt", False), ("ne", False)):
        if bound in rules and not rules.get("each"):
            problem = check_field(rules, rules[bound])
            assert (problem is None) == allowed or (bound != "ne" and "ne" in rules and rules["ne"] == rules[bound]), \
                (leaf.key, bound, problem)
