"""`model.preset`: named defaults that explicit yaml keys override (nested sections merge key by key)."""

from __future__ import annotations

import copy
import difflib
from typing import Any

from llmfoundry.errors import UserError


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_preset(raw: dict[str, Any], presets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Return raw with the preset's values filled in under it (raw wins)."""
    name = raw.get("preset")
    if name is None:
        return raw
    if not isinstance(name, str):
        raise UserError(f"preset: got {name!r}, expected a preset name, one of {', '.join(presets)}")
    if name not in presets:
        close = difflib.get_close_matches(str(name), list(presets), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"preset: got {name!r}, expected one of {', '.join(presets)}{hint}")
    return _merge(presets[name], raw)
