"""Analyses return data; only interp/viz renders: no module outside it imports a rendering library."""

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
RENDERING = {"plotly", "jinja2", "markupsafe"}


def rendering_imports(path: Path) -> list[str]:
    """The rendering modules `path` imports anywhere (top level or inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        found += [n for n in names if n.split(".")[0] in RENDERING]
    return found


def test_the_checker_sees_every_form_of_import(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("import os\nimport plotly.graph_objects as go\ndef f():\n    from jinja2 import Environment\n"
                      "    from markupsafe import Markup\nfrom plotlyish import x\nfrom . import plotly\n")
    assert rendering_imports(sample) == ["plotly.graph_objects", "jinja2", "markupsafe"]


def test_only_viz_imports_plotly_or_jinja2():
    packages = [ROOT / name for name in ("interp", "saes", "transcoders")]
    files = [p for package in packages for p in package.rglob("*.py")]
    assert len(files) > 50 and any(rendering_imports(p) for p in files)  # the walk sees viz's own imports
    outside = {str(p.relative_to(ROOT)): rendering_imports(p) for p in files
               if (ROOT / "interp" / "viz") not in p.parents and rendering_imports(p)}
    assert not outside, f"render in interp/viz and call it from there: {outside}"
