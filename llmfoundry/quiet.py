"""Third-party notices a `foundry` user can neither act on nor avoid, dropped from the console.

Only exact, known messages are dropped (each with the reason it is noise); everything else a library logs or
warns still shows.
"""

from __future__ import annotations

import logging

# transformers imports torchao whenever it is installed (its quantizer table), and torchao 0.18 registers two
# Enums with torch's pytree, which torch 2.14 answers with a deprecation line per Enum: printed before every
# `foundry generate` / `eval` / `eval-text` output though nothing of ours calls it.
_DROPPED = {"torch.utils._pytree": "is an Enum subclass and is now natively supported by torch.compile"}


class _DropKnown(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def drop_known_notices() -> None:
    """Install the filters (idempotent: one filter per logger, however often it is called)."""
    for name, fragment in _DROPPED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(_DropKnown(fragment))
