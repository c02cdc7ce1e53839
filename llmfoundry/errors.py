"""The one exception type for user mistakes.

Anything a user can cause (a bad yaml key, a missing file, malformed data) raises `UserError`; the CLI
prints its message on one line (one line per problem when several are found at once) and exits 1 with no
traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input; `problems` holds one line per distinct mistake."""

    def __init__(self, *problems: str) -> None:
        if not problems:
            raise ValueError("UserError needs at least one message")
        self.problems = _from_worker(problems[0]) if len(problems) == 1 else list(problems)
        super().__init__("\n".join(self.problems))


LAUNCHED = "LLMFOUNDRY_LAUNCHED"
"""Set by `foundry train --nproc` for its workers: they leave printing their one-line errors to the launcher."""


class RunFailure(Exception):
    """A failure of the machines, neither of the user's input nor of our code (a rank died or stopped responding).

    Printed like a UserError (one line, exit 1): the line names what failed and a traceback would add nothing.
    """

    def __init__(self, *problems: str) -> None:
        if not problems:
            raise ValueError("RunFailure needs at least one message")
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
_WORKER_HEADER = "Caught UserError in DataLoader worker"
_TAIL = f"{__name__}.UserError: "


def _from_worker(message: str) -> list[str]:
    """torch's DataLoader re-raises a worker's exception as `UserError(header + formatted traceback)`; keep
    only the original problem lines (the traceback's last entry), so the user still sees one line each."""
    if message.startswith(_WORKER_HEADER) and _TAIL in message:
        return message.rsplit(_TAIL, 1)[1].rstrip("\n").splitlines()
    return [message]
