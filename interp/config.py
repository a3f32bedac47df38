"""Frozen dataclass configs that round-trip through JSON and are validated on load."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from interp.errors import UserError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Build `cls` from `data`, failing on unknown or missing fields and on wrong types."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {unknown} for {cls.__name__}; valid fields are {sorted(fields)}.")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{source}: missing required field(s) {missing} for {cls.__name__}.")
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        if not _matches(value, hints[name]):
            raise ValueError(f"{source}: field {name!r} should be {hints[name]}, got {value!r}.")
    try:
        return cls(**data)
    except ValueError as err:  # the config's own checks (__post_init__): say which file failed them
        raise UserError(f"{source}: {err}") from None


def save_json(cfg: Any, path: Path) -> None:
    write_atomic_text(path, json.dumps(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, indent=2, sort_keys=True))


def load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: is this a run folder written by `interp train`?") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise UserError(f"{path} is not valid JSON ({type(err).__name__}: {err}).") from None


def write_atomic_text(path: Path, text: str) -> None:
    """Write then rename, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if hint is Any:
        return True
    return isinstance(value, origin or hint)
