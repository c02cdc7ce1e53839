"""Load a yaml with its base files, `variables:`, interpolation and command-line overrides.

Layering order (later wins): each file named in `base:` (recursively, relative to the file naming it),
then the file itself, then `key=value` overrides from the command line. `${variables.x}`, any other
`${a.b}`, `${oc.env:VAR,default}` and `${asset:NAME}` (a tokenizer or benchmark folder that `make install`
provides, see llmfoundry/assets) are resolved once at the end; `variables:` is then dropped, as in LLM Foundry.
Every layer is kept so a problem can name the file that set the offending key.

Mistakes YAML or OmegaConf would let through or turn into tracebacks are refused here, naming the file (and
line): a key given twice in one mapping (yaml keeps the last silently), an empty file, an override with broken
flow syntax (`optimizer.lr=[1,`). A list in one layer where an earlier one has a mapping (OmegaConf's
"Cannot merge incompatible container types", which names neither the key nor the files) replaces it, as a
scalar would, and the builder then judges the value like any other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml.constructor import ConstructorError

from llmfoundry.assets import asset_path
from llmfoundry.errors import UserError

BASE_KEY = "base"
VARIABLES_KEY = "variables"
COMMAND_LINE = "command line"

OmegaConf.register_resolver("asset", asset_path, replace=True)


@dataclass
class LoadedConfig:
    """The resolved config as plain Python containers, plus where each key came from."""

    data: dict[str, Any]
    layers: list[tuple[str, dict[str, Any]]]

    def origin(self, dotted_key: str) -> str:
        """The last layer (file path or 'command line') that sets `dotted_key`, or its nearest parent; a key
        no layer sets (a required one left out) is blamed on the main file, not on the command line."""
        parts = _split_key(dotted_key)
        while parts:
            for name, raw in reversed(self.layers):
                if _has_path(raw, parts):
                    return name
            parts = parts[:-1]
        files = [name for name, _ in self.layers if name != COMMAND_LINE]
        return files[-1] if files else self.layers[-1][0] if self.layers else "config"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False, default_flow_style=False)


def load_config(path: str | Path, overrides: list[str] | None = None) -> LoadedConfig:
    """Read `path` and its bases, apply `overrides` (`a.b=value`), resolve interpolations."""
    layers: list[tuple[str, DictConfig]] = []
    _read_layers(Path(path), layers, stack=[])
    if overrides:
        layers.append((COMMAND_LINE, _parse_overrides(overrides)))
    raw_layers = [(name, OmegaConf.to_container(cfg, resolve=False)) for name, cfg in layers]
    loaded = LoadedConfig(data={}, layers=raw_layers)  # type: ignore[arg-type]
    merged = _merge(layers)
    merged.pop(BASE_KEY, None)
    try:
        data = OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        cause = _user_error_behind(err)
        message = str(cause) if cause is not None else str(err).splitlines()[0]
        raise UserError(f"{loaded.origin(key)}: {key or '<root>'}: cannot resolve: {message}") from None
    assert isinstance(data, dict)
    data.pop(VARIABLES_KEY, None)
    loaded.data = data
    return loaded


def _user_error_behind(err: BaseException) -> UserError | None:
    """A UserError raised by one of our resolvers (OmegaConf re-raises it wrapped, more than once)."""
    seen: BaseException | None = err
    while seen is not None and not isinstance(seen, UserError):
        seen = seen.__cause__ or seen.__context__
    return seen


def _merge(layers: list[tuple[str, DictConfig]]) -> DictConfig:
    """Merge the layers in order, a later one winning (also where it replaces a mapping by a list)."""
    merged = OmegaConf.create({})
    for _, cfg in layers:
        _drop_type_changes(merged, cfg)
        merged = OmegaConf.merge(merged, cfg)
    return merged


def _drop_type_changes(base: DictConfig, layer: DictConfig) -> None:
    """A later layer may replace a mapping by a list or the reverse (a single eval_loader by a list of
    them); OmegaConf cannot merge those, so the earlier value is removed first and the later one wins whole."""
    for key in layer:
        if key not in base:
            continue
        old, new = base._get_node(key), layer._get_node(key)
        if OmegaConf.is_dict(old) and OmegaConf.is_dict(new):
            _drop_type_changes(old, new)  # type: ignore[arg-type]
        elif OmegaConf.is_list(old) != OmegaConf.is_list(new) or OmegaConf.is_dict(old) != OmegaConf.is_dict(new):
            base.pop(key)


def _read_layers(path: Path, layers: list[tuple[str, DictConfig]], stack: list[Path]) -> None:
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in [*stack, resolved])
        raise UserError(f"{path}: base files form a cycle: {chain}")
    cfg = _read_yaml(path)
    bases = cfg.get(BASE_KEY)
    if bases is not None:
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, (list, tuple)) and not OmegaConf.is_list(bases):
            raise UserError(f"{path}: {BASE_KEY}: expected a path or a list of paths, got {bases!r}")
        for base in bases:
            if not isinstance(base, str):
                raise UserError(f"{path}: {BASE_KEY}: expected a path, got {base!r}")
            if not (path.parent / base).exists():
                raise UserError(f"{path}: {BASE_KEY}: {path.parent / base}: no such config file (a base path is "
                                "relative to the file that names it)")
            _read_layers(path.parent / base, layers, [*stack, resolved])
        cfg.pop(BASE_KEY)
    layers.append((str(path), cfg))


def _read_yaml(path: Path) -> DictConfig:
    if not path.exists():
        raise UserError(f"{path}: no such config file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a yaml file")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{path}:{where}: invalid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: is not UTF-8 text") from None
    if raw is None:
        raise UserError(f"{path}: is empty; expected a mapping of keys such as model:, train_loader:, max_duration:")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    try:
        return OmegaConf.create(raw)
    except OmegaConfBaseException as err:
        raise UserError(f"{path}: {str(err).splitlines()[0]}") from None


class StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error naming both lines (yaml
    keeps the last one silently). Keys merged in with `<<:` may still be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error says so
                continue
            if first is not None:
                raise ConstructorError(None, None, f"key {key!r} is given twice (lines {first} and {line}); keep one",
                                       key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _parse_overrides(overrides: list[str]) -> DictConfig:
    problems = []
    for item in overrides:
        if "=" not in item or item.startswith("="):
            problems.append(f"{COMMAND_LINE}: {item!r}: expected key=value (e.g. max_duration=20ba)")
            continue
        try:
            OmegaConf.from_dotlist([item])
        except yaml.YAMLError as err:  # the value is parsed as YAML: `optimizer.lr=[1,`
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            problems.append(f"{COMMAND_LINE}: {item!r}: the value is not valid YAML ({problem}); quote it or "
                            "finish the [list] / {mapping}")
        except OmegaConfBaseException as err:
            problems.append(f"{COMMAND_LINE}: {item!r}: {str(err).splitlines()[0]}")
    if problems:
        raise UserError(*problems)
    return OmegaConf.from_dotlist(list(overrides))


_INDEX = re.compile(r"\[(\d+)\]")


def _split_key(dotted: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in dotted.split("."):
        name = _INDEX.split(piece)
        if name[0]:
            parts.append(name[0])
        parts.extend(int(i) for i in name[1::2])
    return parts


def _has_path(raw: Any, parts: list[str | int]) -> bool:
    node = raw
    for part in parts:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return False
        elif not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
