"""The layout's rules, checked on the source: no import cycles in interp, interp never imports saes or
transcoders outside its CLI, and no file over 400 lines."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("interp", "saes", "transcoders")
MAX_LINES = 400


def modules(package: str) -> dict[str, Path]:
    """{dotted module name: file} for every module of `package` (a package's own name maps to its __init__.py)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: set[str], module_level: bool = True) -> set[str]:
    """The modules of `known` that module `name` imports (only at module level, or anywhere in the file)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level else list(ast.walk(tree))
    if module_level:  # statements nested in top-level if/try blocks still run at import time
        nodes = [n for top in nodes for n in ([top] if not isinstance(top, (ast.If, ast.Try)) else ast.walk(top))]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import submodule` depends on the submodule; `from mod import name`, on the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def graph(module_level: bool = True) -> dict[str, set[str]]:
    found = {name: path for package in PACKAGES for name, path in modules(package).items()}
    return {name: imports(name, path, set(found), module_level) for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_known_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_parser_resolves_relative_and_from_imports(tmp_path):
    (tmp_path / "m.py").write_text("from . import a\nfrom .b import c\nimport x.y\ntry:\n    import z\nexcept ImportError:\n"
                                   "    pass\ndef f():\n    import w\n")
    known = {"p.a", "p.b", "p.b.c", "x.y", "z", "w"}
    assert imports("p.m", tmp_path / "m.py", known) == {"p.a", "p.b.c", "x.y", "z"}
    assert imports("p.m", tmp_path / "m.py", known, module_level=False) == known - {"p.b"}


def test_no_import_cycles_at_module_level():
    assert find_cycle(graph()) is None


def test_no_import_cycles_even_through_imports_inside_functions():
    """A lazy import inside a function is still a dependency: dictionary.py must not reach io/ and back."""
    assert find_cycle(graph(module_level=False)) is None


def test_interp_imports_saes_and_transcoders_only_in_its_cli():
    for name, deps in graph(module_level=False).items():
        if name.startswith("interp") and not name.startswith("interp.cli"):
            assert not {d for d in deps if d.split(".")[0] in ("saes", "transcoders")}, name


@pytest.mark.parametrize("package", PACKAGES)
def test_no_file_over_400_lines(package):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these files by what they do: {long}"
