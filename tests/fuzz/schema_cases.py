"""Bad config values generated from the schema itself: walk the dataclasses, and for each field make values
its type refuses, values outside its declared range, and unknown keys beside it.

Whether a value is refused is decided here by a small oracle that is independent of the builder under test
(`refuses`); it is conservative: a value it is unsure about is never generated, so every case is a real mistake
and exactly one line is owed for it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from hypothesis import strategies as st

from llmfoundry.config.duration import Duration
from llmfoundry.config.validate import KEYS

Tag = tuple[str, ...]
DURATION = re.compile(r"^\s*[0-9][0-9_]*(\.[0-9_]*)?([eE][+-]?[0-9]+)?\s*(ba|ep|tok|sp|dur)\s*$")
# Scalars and containers of each kind; each field gets those its type refuses.
POOL: list[Any] = ["zzq", "", 7, -3, 1.5, True, False, None, [1], ["zzq"], [], {"zzk": 1}]


@dataclass(frozen=True)
class Leaf:
    key: str  # dotted path from the root of the config
    tp: Any  # its annotation
    metadata: dict[str, Any]
    is_mapping: bool  # a dataclass node (unknown keys can be added inside it)


def leaves(cls: type, base: dict[str, Any], prefix: str = "") -> list[Leaf]:
    """Every field reachable from `cls`, descending into dataclasses (for a tagged union: the member named
    by `base`, the valid config the cases are injected into)."""
    out: list[Leaf] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        sub = base.get(f.name) if isinstance(base, dict) else None
        child = _dataclass_member(tp, sub if isinstance(sub, dict) else {})
        out.append(Leaf(key, tp, dict(f.metadata), child is not None))
        if child is not None:
            out += leaves(child, sub if isinstance(sub, dict) else {}, key)
    return out


def _members(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)


def _dataclass_member(tp: Any, raw: dict[str, Any]) -> type | None:
    classes = [m for m in _members(tp) if dataclasses.is_dataclass(m) and m is not Duration]
    if len(classes) == 1:
        return classes[0]
    for cls in classes:  # a tagged union: the member whose `name` Literal holds the base's name
        if raw.get("name", "text") in typing.get_args(typing.get_type_hints(cls)["name"]):
            return cls
    return None


def refuses(tp: Any, value: Any) -> bool:
    """Whether the schema type `tp` must refuse `value` (an independent oracle for the builder)."""
    if tp is Any:
        return False
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return all(refuses(m, value) for m in args)
    if tp is type(None):
        return value is not None
    if tp is bool:
        return not isinstance(value, bool)
    if tp is int:
        return isinstance(value, bool) or not isinstance(value, int)
    if tp is float:
        return isinstance(value, bool) or not isinstance(value, (int, float))
    if tp is str:
        return not isinstance(value, str)
    if tp is Duration:
        if isinstance(value, bool):
            return True
        return not (isinstance(value, int) and value >= 0) and not (isinstance(value, str) and DURATION.match(value))
    if origin is Literal:
        return not any(value == a and type(value) is type(a) for a in args)
    if origin is list:
        if not isinstance(value, list):
            return True
        return bool(args) and any(refuses(args[0], v) for v in value)
    if origin is dict:
        return not isinstance(value, dict) or (bool(args) and any(refuses(args[1], v) for v in value.values()))
    if dataclasses.is_dataclass(tp):
        return not isinstance(value, dict) or bool(value)  # {"zzk": 1}: an unknown key
    raise TypeError(f"the fuzz oracle does not know {tp!r}")


def one_problem(value: Any, tp: Any) -> bool:
    """A refused value that is exactly one mistake: a non-empty mapping for a dataclass with required fields
    would also miss those (two lines, rightly), so such values are not generated."""
    members = [m for m in _members(tp) if dataclasses.is_dataclass(m) and m is not Duration]
    if members and isinstance(value, dict):
        return False
    if isinstance(value, list) and len(value) > 1:
        return False
    return True


def wrong_type(leaf: Leaf) -> st.SearchStrategy[Any]:
    """Values of another type or container than the field takes (empty when it takes every pool value)."""
    bad = [v for v in POOL if refuses(leaf.tp, v) and one_problem(v, leaf.tp)]
    literals = [a for m in _members(leaf.tp) if typing.get_origin(m) is Literal for a in typing.get_args(m)]
    if literals and all(isinstance(a, str) for a in literals):
        bad_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).map(lambda s: "zz" + s)
        return st.one_of(st.sampled_from(bad), bad_names) if bad else bad_names
    return st.sampled_from(bad) if bad else st.nothing()


def _numeric(tp: Any) -> type | None:
    members = [m for m in _members(tp) if m in (int, float)]
    return float if float in members else members[0] if members else None


def _base_type(tp: Any) -> Any:
    return next((m for m in _members(tp) if m is not type(None)), tp)


def out_of_range(leaf: Leaf) -> st.SearchStrategy[Any]:
    """Values of the right type outside the field's declared range (empty when it declares none)."""
    rules = {k: v for k, v in leaf.metadata.items() if k in KEYS}
    if not rules:
        return st.nothing()
    if rules.get("each") or "len" in rules:
        item = _numeric(typing.get_args(_base_type(leaf.tp))[0])
        good = [_inside(rules, item)] * rules.get("len", 2)
        strategies = []
        if rules.get("each"):
            strategies.append(st.tuples(_outside(rules, item), st.integers(0, len(good) - 1)).map(
                lambda pair: [pair[0] if i == pair[1] else g for i, g in enumerate(good)]))
        if "len" in rules:
            strategies.append(st.sampled_from([good[:-1], good + [good[0]]]))
        return st.one_of(*strategies)
    kind = _numeric(leaf.tp)
    return _outside(rules, kind) if kind is not None else st.nothing()


def _inside(rules: dict[str, Any], kind: type) -> Any:
    low = rules.get("ge", rules.get("gt", 0))
    value = low + (0.5 if kind is float else 1) if "gt" in rules else low
    return kind(value)


def _outside(rules: dict[str, Any], kind: type) -> st.SearchStrategy[Any]:
    parts = []
    if kind is int:
        if "ge" in rules:
            parts.append(st.integers(max_value=rules["ge"] - 1, min_value=rules["ge"] - 10**12))
        if "gt" in rules:
            parts.append(st.integers(max_value=rules["gt"], min_value=rules["gt"] - 10**12))
        if "le" in rules:
            parts.append(st.integers(min_value=rules["le"] + 1, max_value=rules["le"] + 10**30))
        if "lt" in rules:
            parts.append(st.integers(min_value=rules["lt"], max_value=rules["lt"] + 10**12))
    else:
        finite = {"allow_nan": False, "allow_infinity": False}
        if "ge" in rules:
            parts.append(st.floats(max_value=rules["ge"], exclude_max=True, min_value=rules["ge"] - 1e12, **finite))
        if "gt" in rules:
            parts.append(st.floats(max_value=rules["gt"], min_value=rules["gt"] - 1e12, **finite))
        if "le" in rules:
            parts.append(st.floats(min_value=rules["le"], exclude_min=True, max_value=rules["le"] + 1e12, **finite))
        if "lt" in rules:
            parts.append(st.floats(min_value=rules["lt"], max_value=rules["lt"] + 1e12, **finite))
        parts.append(st.just(math.nan))
    if "ne" in rules:
        parts.append(st.just(kind(rules["ne"])))
    return st.one_of(*parts)
