"""One time type for every duration-like key (max_duration, eval_interval, t_warmup, ...).

LLM Foundry users write `4800ba`, `2ep`, `5_000_000tok`, `1000sp` or `0.1dur`; a bare integer means
epochs (Composer's rule) so their yamls keep their meaning here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Unit = Literal["ba", "ep", "tok", "sp", "dur"]

UNIT_NAMES: dict[str, str] = {
    "ba": "batches",
    "ep": "epochs",
    "tok": "tokens",
    "sp": "samples",
    "dur": "fraction of max_duration",
}

_PATTERN = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?)\s*(ba|ep|tok|sp|dur)\s*$")


class DurationError(ValueError):
    """A time string that does not parse; the message says what is accepted."""


@dataclass(frozen=True)
class Duration:
    """A length of training in one unit: batches, epochs, tokens, samples or a fraction of the run."""

    value: float
    unit: Unit

    @classmethod
    def parse(cls, raw: str | int | float | Duration) -> Duration:
        if isinstance(raw, Duration):
            return raw
        if isinstance(raw, bool):
            raise DurationError(f"expected a time string like '100ba', got {raw!r}")
        if isinstance(raw, int):
            if raw < 0:
                raise DurationError(f"expected a time string like '100ba' or a whole number of epochs, got {raw}")
            return cls(float(raw), "ep")
        if not isinstance(raw, str):
            raise DurationError(f"expected a time string like '100ba', got {raw!r}")
        match = _PATTERN.match(raw)
        if match is None:
            raise DurationError(
                f"expected a time string like '100ba', '2ep', '5_000_000tok', '1000sp' or '0.25dur', got {raw!r}"
            )
        value = float(match.group(1).replace("_", ""))
        unit: Unit = match.group(2)  # type: ignore[assignment]
        if unit != "dur" and value != int(value):
            raise DurationError(f"{raw!r}: only 'dur' takes a fraction; {UNIT_NAMES[unit]} must be whole")
        if unit == "dur" and not 0 <= value <= 1:
            raise DurationError(f"{raw!r}: a 'dur' fraction must lie between 0 and 1")
        return cls(value, unit)

    def __str__(self) -> str:
        if self.unit == "dur":
            return f"{self.value:g}dur"
        return f"{int(self.value)}{self.unit}"

    @property
    def is_zero(self) -> bool:
        return self.value == 0
