"""Declarative ranges for config fields, read by the builder (config/build.py) from dataclass field metadata.

A field states its range next to its docstring, so every field is checked the same way and a new field gets
its check by saying it, not by a hand-written `if` somewhere else:

    lr: float = field(default=6.0e-4, metadata={"ge": 0})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95], metadata={"each": True, "ge": 0, "lt": 1, "len": 2})
    seed: int = field(default=17, metadata=SEED)

Keys (other metadata keys are left to whoever set them):
  ge, gt, le, lt  bounds on the value (numbers only; strings such as 'auto' and null pass through)
  ne              one forbidden value (e.g. 0 where -1 means "all" and 1+ a count)
  each            apply the bounds to every item of a list instead of the list
  len             exact length of a list
  hint            what to do instead, appended to the message

A value out of range reaches torch, numpy or the data loader otherwise, and fails there with a traceback
(`Invalid learning rate`, `integer modulo by zero`, `Overflow when unpacking long long`) or, worse, runs:
a negative step count, `val_loss=0`, reversed gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KEYS = frozenset({"ge", "gt", "le", "lt", "ne", "each", "len", "hint"})

# numpy's legacy seeding (np.random.seed, RandomState) takes 0 <= seed < 2**32, the narrowest range among the
# RNGs a seed reaches (torch.manual_seed takes 64 bits), so a seed in this range is valid everywhere.
SEED_MAX = 2**32 - 1
SEED: dict[str, Any] = {"ge": 0, "le": SEED_MAX, "hint": "seeds must lie in numpy's range 0..4294967295"}
POSITIVE: dict[str, Any] = {"ge": 1}
NON_NEGATIVE: dict[str, Any] = {"ge": 0}
PROBABILITY: dict[str, Any] = {"ge": 0, "lt": 1}


def check_field(metadata: Mapping[str, Any], value: Any) -> str | None:
    """The problem with `value` under the field's constraints, as one message, or None when it is fine."""
    rules = {k: v for k, v in metadata.items() if k in KEYS}
    if not rules or value is None:
        return None
    hint = f"; {rules['hint']}" if "hint" in rules else ""
    if "len" in rules and isinstance(value, list) and len(value) != rules["len"]:
        return f"got {len(value)} values {value!r}, expected exactly {rules['len']}{hint}"
    if rules.get("each"):
        if not isinstance(value, list):
            return None
        for index, item in enumerate(value):
            problem = _check_number(rules, item)
            if problem is not None:
                return f"item {index}: {problem}{hint}"
        return None
    problem = _check_number(rules, value)
    return None if problem is None else problem + hint


def _check_number(rules: Mapping[str, Any], value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value:  # NaN compares false with every bound
        return "got nan, expected a number"
    if "ne" in rules and value == rules["ne"]:
        return f"got {value!r}, which is not allowed"
    wanted = _describe(rules)
    if ("ge" in rules and not value >= rules["ge"]) or ("gt" in rules and not value > rules["gt"]) \
            or ("le" in rules and not value <= rules["le"]) or ("lt" in rules and not value < rules["lt"]):
        return f"got {value!r}, expected {wanted}"
    return None


def _describe(rules: Mapping[str, Any]) -> str:
    low = f">= {rules['ge']}" if "ge" in rules else f"> {rules['gt']}" if "gt" in rules else None
    high = f"<= {rules['le']}" if "le" in rules else f"< {rules['lt']}" if "lt" in rules else None
    text = " and ".join(part for part in (low, high) if part) or "a number"
    if "ne" in rules:
        text += f", not {rules['ne']!r}"
    return "a number " + text
