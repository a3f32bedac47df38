"""The README's code runs as written: its Python blocks (budgets shrunk through the INTERP_MODEL,
INTERP_TOKENS and INTERP_CONTEXTS variables the example documents), its commands (budgets shrunk by appending the documented
--tokens/--eval-contexts flags), and every flag its command-line synopsis shows exists."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from interp.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TINY7 = "tiny:n_layers=7,d_model=32,n_heads=4,d_mlp=64,n_ctx=128"  # has the example's blocks.6 hook
SHRINK = ["--tokens", "8192", "--eval-contexts", "2"]


def blocks(language: str) -> list[str]:
    return [b for lang, b in re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S) if lang == language]


def commands(block: str) -> list[str]:
    """The block's commands, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", block)
    return [line.split("  #")[0].strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def run_python_blocks(tmp_path: Path, env: dict[str, str]) -> None:
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(blocks("python")))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]


def check_python_outputs(tmp_path: Path) -> None:
    import json

    for k in (16, 32, 64):
        cfg = json.loads((tmp_path / "runs" / "sweep" / f"k{k}" / "cfg.json").read_text())
        assert (cfg["k"], cfg["aux_k"]) == (k, cfg["d_in"] // 2) and cfg["training"]["tokens"] > 0
        assert (tmp_path / "runs" / "sweep" / f"k{k}" / "metrics.json").exists()
    assert not (tmp_path / "runs" / "sweep" / "checkpoint.safetensors").exists()
    graph = json.loads((tmp_path / "graph.json").read_text())
    assert graph["prompt"] == "Romeo gave a ring to" and (tmp_path / "circuit.html").stat().st_size > 10_000


def test_readme_has_the_two_import_python_example():
    first = blocks("python")[0]
    assert [line for line in first.splitlines() if line.startswith(("import", "from"))] == \
        ["import os", "from interp import (ActivationStore, Dictionary, DictionaryConfig, TrainConfig, architecture, load_model,"]
    assert not any("import saes" in b for b in blocks("python"))


@pytest.mark.slow  # about 8 model-and-eval passes (3 SAEs, 7 transcoders): minutes on a shared CPU, even tiny
def test_python_blocks_run_on_a_tiny_model(tmp_path):
    run_python_blocks(tmp_path, {"INTERP_MODEL": TINY7, "INTERP_TOKENS": "8192", "INTERP_CONTEXTS": "8"})
    check_python_outputs(tmp_path)


@pytest.mark.slow
def test_python_blocks_run_on_the_embedded_model(tmp_path):
    run_python_blocks(tmp_path, {"INTERP_TOKENS": "8192", "INTERP_CONTEXTS": "8"})
    check_python_outputs(tmp_path)


def test_every_flag_in_the_command_synopsis_exists():
    synopsis = next(b for b in blocks("") if b.startswith("interp train"))
    lines = [c for c in commands(synopsis) if c.startswith("interp ")]
    assert {line.split()[1] for line in lines} == set(COMMANDS)  # every command documented, none that is not there
    parser = build_parser()
    for line in lines:
        command = line.split()[1]
        known = {opt for action in parser._subparsers._group_actions[0].choices[command]._actions
                 for opt in action.option_strings}
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line))
        assert flags <= known, (command, flags - known)


def test_the_quickstart_commands_are_the_ones_the_makefile_runs():
    quickstart = [c.split()[:2] for b in blocks("bash") for c in commands(b) if c.startswith("make")]
    assert quickstart == [["make", "demo"], ["make", "test"]]
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
    assert "interp train --out runs/demo --overwrite" in recipe


@pytest.mark.slow
def test_make_demo_training_command_runs_with_a_shrunk_budget(tmp_path, monkeypatch):
    """`make test` is the suite itself and `make demo` first installs; this runs the demo's own command."""
    from interp.cli import main

    recipe = re.search(r"\$\(BIN\)/(interp train [^\n]*)", (ROOT / "Makefile").read_text()).group(1)
    monkeypatch.chdir(tmp_path)
    assert main([*shlex.split(recipe)[1:], *SHRINK]) == 0
    assert (tmp_path / "runs" / "demo" / "metrics.json").exists()


@pytest.mark.slow
def test_the_cpu_torchrun_command_runs(tmp_path):
    """The GPU and two-node torchrun lines need hardware this suite does not have; the CPU (gloo) one runs."""
    line = next(c for b in blocks("bash") for c in commands(b) if c.startswith("torchrun --nproc-per-node 2 -m interp train --model tiny"))
    argv = shlex.split(line)
    out = subprocess.run([str(Path(sys.executable).parent / argv[0]), *argv[1:], *SHRINK, "--out", str(tmp_path / "run")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "run" / "cfg.json").exists()
