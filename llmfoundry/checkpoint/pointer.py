"""`checkpoints/latest`: the one place that decides which checkpoint a run folder means.

`latest` is a one-line text file naming a `step-XXXXXXXX` folder beside it, rewritten (atomically) only after
that folder is complete. A damaged pointer (non-UTF-8, empty, a path leaving its checkpoints folder, a missing
or incomplete target) is a user-facing error that names `latest` and offers the newest intact checkpoint in
the same folder, if there is one, with the command that makes `latest` name it. Nothing here follows a
pointer outside its own checkpoints folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from llmfoundry.checkpoint.manifest import looks_intact
from llmfoundry.errors import UserError

LATEST = "latest"
PREFIX = "step-"
STEP_NAME = re.compile(r"step-\d{8}")
TMP_PREFIX = f".tmp-{PREFIX}"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def parse_pointer(raw: bytes, where: str) -> str:
    """The checkpoint name in a `latest` file's bytes, or a UserError saying what is wrong with them."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UserError(f"{where}: not UTF-8 text (expected a name like step-00000012)") from None
    if not text:
        raise UserError(f"{where}: empty (expected a name like step-00000012)")
    if not STEP_NAME.fullmatch(text):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise UserError(f"{where}: names {shown!r}; it must name a step-XXXXXXXX folder inside its own "
                        "checkpoints folder")
    return text


def intact_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Step folders that look intact (complete DCP metadata, every manifest file at its size), oldest first."""
    if not ckpt_dir.is_dir():
        return []
    steps = sorted(p for p in ckpt_dir.iterdir() if STEP_NAME.fullmatch(p.name) and p.is_dir())
    return [p for p in steps if looks_intact(p)]


def offer_other(ckpt_dir: Path, broken: str | None, verb: str = "resume from it") -> str:
    """'; the previous complete checkpoint is step-X: echo step-X > .../latest to ...' or '' when none exists."""
    others = [p for p in intact_checkpoints(ckpt_dir) if p.name != broken]
    if broken is not None:
        older = [p for p in others if p.name < broken]
        others = older or others
    if not others:
        return ""
    name = others[-1].name
    which = "previous" if broken is not None and name < broken else "newest"
    return f"; the {which} complete checkpoint is {name}: echo {name} > {ckpt_dir / LATEST} to {verb}"


def read_latest(ckpt_dir: Path, verb: str = "resume from it") -> Path | None:
    """The complete checkpoint `ckpt_dir/latest` names; None when the folder has neither pointer nor checkpoint.

    A missing pointer beside complete checkpoints (a crash between the rename and the pointer update, or a
    deleted file) is an error offering the newest one rather than a silent guess.
    """
    pointer = ckpt_dir / LATEST
    if not pointer.is_file():
        if pointer.exists():
            raise UserError(f"{pointer}: not a file (expected a text file naming a step-XXXXXXXX folder)")
        offer = offer_other(ckpt_dir, None, verb)
        if offer:
            raise UserError(f"{pointer}: missing though the folder holds checkpoints{offer}")
        return None
    try:
        raw = pointer.read_bytes()
    except OSError as err:
        raise UserError(f"{pointer}: cannot be read ({err.strerror})") from None
    try:
        name = parse_pointer(raw, str(pointer))
    except UserError as err:
        raise UserError(err.problems[0] + offer_other(ckpt_dir, None, verb)) from None
    target = ckpt_dir / name
    if not target.is_dir():
        raise UserError(f"{pointer}: names {name}, which does not exist{offer_other(ckpt_dir, name, verb)}")
    if not looks_intact(target):
        raise UserError(f"{pointer}: names {name}, which is incomplete or damaged (files missing or cut short)"
                        f"{offer_other(ckpt_dir, name, verb)}")
    return target


def write_latest(ckpt_dir: Path, name: str) -> None:
    """Point `latest` at `name` atomically (temporary file, fsync, rename): a crash leaves the old or the new."""
    tmp = ckpt_dir / f".{LATEST}.tmp"
    with open(tmp, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, ckpt_dir / LATEST)
