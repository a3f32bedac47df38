"""Our own format: a run folder with cfg.json (a DictionaryConfig, with `arch`) and sae.safetensors."""

from __future__ import annotations

import json
from pathlib import Path

from interp.dictionary import CFG_FILE, WEIGHTS_FILE, Dictionary, architecture, read_config, read_weights
from interp.io.build import override

NAME = "interp"
FILES = (CFG_FILE, WEIGHTS_FILE)


def claims(folder: Path) -> bool:
    """cfg.json naming an `arch` beside sae.safetensors (sparsify writes the same file names, without `arch`)."""
    if not (folder / CFG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        return False
    try:
        return "arch" in json.loads((folder / CFG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, RecursionError):
        return False


def read(folder: Path, **hints) -> Dictionary:
    """The dictionary saved by `Dictionary.save` in `folder`."""
    cfg = read_config(folder / CFG_FILE)
    model = architecture(cfg.arch)(cfg)
    model.load_state_dict(read_weights(folder / WEIGHTS_FILE, model.state_dict()))
    return override(model, hints.get("hook_in", ""), hints.get("hook_out", ""), hints.get("model", ""))


def read_set(folder: Path, model: str = "", **_) -> dict[str, Dictionary]:
    """{run folder name: dictionary} for every run folder directly under `folder` (layer_0/, layer_1/, ...)."""
    subs = sorted(s for s in folder.iterdir() if s.is_dir() and claims(s))
    if not subs:
        raise FileNotFoundError(f"{folder} holds no run folders (*/{CFG_FILE} + */{WEIGHTS_FILE}).")
    return {s.name: read(s, model=model) for s in subs}
