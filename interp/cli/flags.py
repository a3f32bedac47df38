"""Command-line flags derived from the config dataclasses, so the CLI and the Python API share one set of defaults.

A field `lr: float = 1e-3  # Adam learning rate` becomes `--lr` (type float, default 1e-3, help "Adam learning
rate"); the help is the comment on the field's line, or a docstring right under the field. The fields are read
from the module's source with `ast`, without importing it: the modules defining the configs import torch, and
`interp --help` must stay instant. tests/cli/test_flags.py checks the parsed defaults against the real classes.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TYPES = {"int": int, "float": float, "str": str, "bool": bool}
UNKNOWN = object()  # a default that is not a literal (a name, a call): such a field cannot be a flag
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


@dataclass(frozen=True)
class ConfigField:
    """One dataclass field as the source states it: `kind` is int/float/str/bool (None for others)."""

    name: str
    kind: type | None
    optional: bool  # annotated `X | None`
    default: Any
    help: str


def config_fields(module: str, class_name: str) -> dict[str, ConfigField]:
    """{name: ConfigField} for the fields of dataclass `class_name` in `module`, read from its source file."""
    path = Path(importlib.util.find_spec(module).origin)
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    if node is None:
        raise LookupError(f"{path} defines no class {class_name}; the CLI flags are derived from it.")
    out = {}
    body = node.body
    for i, stmt in enumerate(body):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        after = body[i + 1] if i + 1 < len(body) else None
        out[stmt.target.id] = ConfigField(stmt.target.id, *_kind(ast.unparse(stmt.annotation)), _value(stmt.value),
                                          _help(stmt, after, lines))
    return out


def add_flags(parser: argparse.ArgumentParser, fields: dict[str, ConfigField], names: list[str],
              rename: dict[str, str] | None = None, lists: bool = False) -> None:
    """Add `--name` for each of `names` (dest: the field name). `lists`: numbers take comma-separated values (a sweep)."""
    for name in names:
        f = fields[name]
        flag = "--" + (rename or {}).get(name, name).replace("_", "-")
        f = ConfigField(f.name, f.kind, f.optional, f.default, f.help.replace("%", "%%"))  # argparse formats help with %
        shown = "" if f.default is None else f" [default: {f.default:g}]" if isinstance(f.default, float) else \
            f" [default: {f.default}]"
        if f.default is UNKNOWN:
            raise TypeError(f"{name}'s default is not a literal; it cannot be a flag.")
        if f.kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=f.default, help=f.help)
        elif f.kind is None:
            raise TypeError(f"{name} is not an int, float, str or bool field; it cannot be a flag.")
        elif lists and f.kind in (int, float):
            parser.add_argument(flag, dest=name, type=_comma_list(f.kind), default=f.default, metavar="V[,V...]",
                                help=f.help + shown)
        else:
            parser.add_argument(flag, dest=name, type=f.kind, default=f.default, help=f.help + shown)


def values(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """{field: value} of the parsed flags for `names`."""
    return {name: getattr(args, name) for name in names}


def _comma_list(kind: type):
    def parse(text: str) -> list:
        try:
            return [kind(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None

    return parse


def _kind(annotation: str) -> tuple[type | None, bool]:
    parts = [p.strip() for p in annotation.split("|")]
    optional = "None" in parts
    parts = [p for p in parts if p != "None"]
    return (TYPES.get(parts[0]) if len(parts) == 1 else None), optional


def _value(node: ast.expr | None) -> Any:
    """The default a field's source gives: a literal or simple arithmetic on literals; else UNKNOWN."""
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _value(node.left), _value(node.right)
        return UNKNOWN if UNKNOWN in (left, right) else _OPS[type(node.op)](left, right)
    try:
        return ast.literal_eval(node)
    except ValueError:
        return UNKNOWN


def _help(stmt: ast.AnnAssign, after: ast.stmt | None, lines: list[str]) -> str:
    if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
        return " ".join(after.value.value.split())
    tail = lines[stmt.end_lineno - 1][stmt.end_col_offset:].strip()
    return tail[1:].strip() if tail.startswith("#") else ""
