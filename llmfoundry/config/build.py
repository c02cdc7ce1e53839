"""Turn a plain resolved dict into typed dataclasses, reporting every problem at once.

The dataclasses are the single source of names, types and defaults. This builder is deliberately small:
it knows the handful of types our schemas use (scalars, Optional/unions, Literal, list, dict, Duration,
nested dataclasses, and tagged unions of dataclasses picked by their `name` field).

A dataclass may define a classmethod `config_expand(raw: dict) -> dict` that rewrites the raw mapping
before validation (models use it to apply a `preset`). A field's range lives in its metadata
(`field(default=..., metadata={"ge": 0})`) and is checked here for every value a user sets (config/validate.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Callable, Literal, Union

from llmfoundry.config.duration import Duration, DurationError
from llmfoundry.config.validate import check_field
from llmfoundry.errors import UserError

# Maps a dotted key to a human description of where it was set ("yamls/a.yaml", "command line").
OriginFn = Callable[[str], str]


def _no_origin(_: str) -> str:
    return "config"


class _Problems:
    def __init__(self, origin: OriginFn) -> None:
        self.origin = origin
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{self.origin(key)}: {key or '<root>'}: {message}")


def build(cls: type, raw: Any, *, key: str = "", origin: OriginFn = _no_origin) -> Any:
    """Build `cls` (a dataclass or any supported type) from `raw`, raising one UserError listing all problems."""
    problems = _Problems(origin)
    value = _convert(cls, raw, key, problems)
    if problems.lines:
        raise UserError(*problems.lines)
    return value


def describe(tp: Any) -> str:
    """A short human name for a type annotation, used in error messages."""
    if tp is Any:
        return "anything"
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true/false"
    if tp is Duration:
        return "a time string like '100ba'"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):  # tagged unions of dataclasses would read "a mapping or a mapping"
        return " or ".join(dict.fromkeys(describe(a) for a in args))
    if origin is list:
        return f"a list of {describe(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _join(key: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{key}[{name}]"
    return f"{key}.{name}" if key else name


def _convert(tp: Any, raw: Any, key: str, problems: _Problems) -> Any:
    if tp is Any:
        return raw
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if tp is Duration:
        try:
            return Duration.parse(raw)
        except DurationError as err:
            problems.add(key, str(err))
            return None
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, raw, key, problems)
    if origin in (Union, types.UnionType):
        return _convert_union(tp, args, raw, key, problems)
    if origin is Literal:
        if raw in args:
            return raw
        suggestion = _suggest(str(raw), [str(a) for a in args])
        problems.add(key, f"got {raw!r}, expected one of {', '.join(repr(a) for a in args)}{suggestion}")
        return None
    if origin is list:
        if not isinstance(raw, (list, tuple)):
            problems.add(key, f"got {raw!r}, expected {describe(tp)}")
            return None
        item = args[0] if args else Any
        return [_convert(item, v, _join(key, i), problems) for i, v in enumerate(raw)]
    if origin is dict:
        if not isinstance(raw, dict):
            problems.add(key, f"got {raw!r}, expected {describe(tp)}")
            return None
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(item, v, _join(key, str(k)), problems) for k, v in raw.items()}
    if tp is type(None):
        if raw is None:
            return None
        problems.add(key, f"got {raw!r}, expected null")
        return None
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        problems.add(key, f"got {raw!r}, expected true or false")
        return None
    if tp is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        problems.add(key, f"got {raw!r}, expected an integer")
        return None
    if tp is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        problems.add(key, f"got {raw!r}, expected a number")
        return None
    if tp is str:
        if isinstance(raw, str):
            return raw
        problems.add(key, f"got {raw!r}, expected a string")
        return None
    raise TypeError(f"schema uses an unsupported type {tp!r} at {key}")


def _convert_union(tp: Any, args: tuple, raw: Any, key: str, problems: _Problems) -> Any:
    if raw is None:
        if type(None) in args:
            return None
        problems.add(key, f"is required (expected {describe(tp)})")
        return None
    members = [a for a in args if a is not type(None)]
    lists = [a for a in members if typing.get_origin(a) is list]
    if isinstance(raw, (list, tuple)) and lists:  # `X | list[X]`: a list goes to the list member
        return _convert(lists[0], raw, key, problems)
    tagged = [a for a in members if dataclasses.is_dataclass(a) and a is not Duration]
    if len(tagged) > 1:
        return _convert_tagged(tagged, raw, key, problems)
    attempts = []
    for member in members:
        trial = _Problems(problems.origin)
        value = _convert(member, raw, key, trial)
        if not trial.lines:
            return value
        attempts.append((member, trial))
    structured = [t for m, t in attempts if dataclasses.is_dataclass(m) or typing.get_origin(m) in (list, dict)]
    if len(members) == 1 or (isinstance(raw, (dict, list)) and structured):
        problems.lines.extend((structured or [attempts[0][1]])[0].lines)
        return None
    problems.add(key, f"got {raw!r}, expected {describe(tp)}")
    return None


def _tag_values(cls: type) -> tuple:
    field = {f.name: f for f in dataclasses.fields(cls)}.get("name")
    hints = typing.get_type_hints(cls)
    if field is None or typing.get_origin(hints["name"]) is not Literal:
        raise TypeError(f"{cls.__name__} is in a tagged union but has no Literal 'name' field")
    return typing.get_args(hints["name"])


def _convert_tagged(members: list[type], raw: Any, key: str, problems: _Problems) -> Any:
    if not isinstance(raw, dict):
        problems.add(key, f"got {raw!r}, expected a mapping with a 'name'")
        return None
    names = {tag: cls for cls in members for tag in _tag_values(cls)}
    name = raw.get("name")
    if name is None:
        problems.add(_join(key, "name"), f"is required (one of {', '.join(map(repr, names))})")
        return None
    if not isinstance(name, str) or name not in names:
        problems.add(
            _join(key, "name"),
            f"got {name!r}, expected one of {', '.join(map(repr, names))}{_suggest(str(name), list(names))}",
        )
        return None
    return _convert_dataclass(names[name], raw, key, problems)


def _convert_dataclass(cls: type, raw: Any, key: str, problems: _Problems) -> Any:
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        problems.add(key, f"got {raw!r}, expected a mapping")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    expand = getattr(cls, "config_expand", None)
    if expand is not None:
        try:
            raw = expand(dict(raw))
        except UserError as err:
            _add_field_lines(err, fields, key, problems)
            return None
    hints = typing.get_type_hints(cls)
    unknown = [k for k in raw if k not in fields]
    for name in unknown:
        problems.add(_join(key, str(name)), f"unknown key{_suggest(str(name), list(fields))}")
    before = len(problems.lines)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        sub = _join(key, name)
        if name in raw:
            errors_before = len(problems.lines)
            kwargs[name] = _convert(hints[name], raw[name], sub, problems)
            problem = check_field(field.metadata, kwargs[name]) if len(problems.lines) == errors_before else None
            if problem is not None:
                problems.add(sub, problem)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            problems.add(sub, f"is required (expected {describe(hints[name])})")
    if len(problems.lines) > before:
        return None  # cross-field checks in __post_init__ would only add noise now
    try:
        return cls(**kwargs)
    except UserError as err:  # __post_init__ cross-field checks
        _add_field_lines(err, fields, key, problems)
        return None


def _add_field_lines(err: UserError, fields: dict[str, Any], key: str, problems: _Problems) -> None:
    """Lines written as "field[.sub]: message" by config_expand or __post_init__ are filed under key.field."""
    for line in err.problems:
        head, sep, rest = line.partition(": ")
        if sep and head.split(".")[0].split("[")[0] in fields:
            problems.add(_join(key, head), rest)
        else:
            problems.add(key, line)


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
