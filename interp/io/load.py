"""One entry point for every dictionary format: `load_dictionary(source)` and `load_transcoder_set(source)`.

`source` is a local folder or file, or a hub repo id (with `subfolder` naming the dictionary inside it).
The format is detected from the files present, in the order of `FORMATS` (each reader module says which
files it needs and whether a folder is its own); `format=` forces one. Readers return our `Dictionary`
with encode/decode equal to the source library's forward (see each reader's docstring).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from interp.dictionary import Dictionary
from interp.io import hub

FORMATS = ("interp", "saelens", "sparsify", "gemma_scope", "llama_scope", "dictionary_learning")  # detection order
SETS = ("circuit_tracer", "interp", "sparsify", "llama_scope")  # formats of transcoder sets
MODULES = {"interp": "native", "saelens": "saelens", "sparsify": "sparsify", "gemma_scope": "gemma_scope",
           "llama_scope": "llama_scope", "dictionary_learning": "dictionary_learning", "circuit_tracer": "circuit_tracer"}


def reader(fmt: str):
    if fmt not in MODULES:
        raise ValueError(f"Unknown dictionary format {fmt!r}; known: {sorted(MODULES)} (or 'auto').")
    return importlib.import_module(f"interp.io.{MODULES[fmt]}")


def _patterns(formats) -> list[str]:
    return sorted({name for fmt in formats for name in reader(fmt).FILES})


def detect(path: Path) -> str:
    """The format of the dictionary at `path` (a folder, or a params.npz / ae.pt file)."""
    for fmt in FORMATS:
        if reader(fmt).claims(path if path.is_dir() else path.parent):
            return fmt
    present = sorted(p.name for p in (path.iterdir() if path.is_dir() else [path]))[:12]
    raise ValueError(f"{path}: no known dictionary format (found {present}); expected one of: "
                     + "; ".join(f"{f}: {', '.join(reader(f).FILES)}" for f in FORMATS) + ". Pass format= to force one.")


def split_source(source: str | Path, subfolder: str | None = None) -> tuple[str | Path, str | None]:
    """(source, subfolder) from one string as the CLI takes it: a local path, "owner/repo", "owner/repo:sub/folder"
    or "hf://owner/repo/sub/folder"."""
    text = str(source)
    if subfolder is not None or Path(text).exists():
        return source, subfolder
    if text.startswith("hf://"):
        parts = text.removeprefix("hf://").strip("/").split("/")
        return "/".join(parts[:2]), "/".join(parts[2:]) or None
    repo, sep, sub = text.partition(":")
    if sep and hub.is_repo_id(repo):
        return repo, sub or None
    return source, subfolder


def load_dictionary(source: str | Path, subfolder: str | None = None, *, format: str = "auto", device: str = "cpu",
                    dtype: torch.dtype | str | None = None, hook_in: str = "", hook_out: str = "", model: str = "",
                    revision: str | None = None) -> Dictionary:
    """Load a dictionary in any supported format (see `FORMATS`) as our `Dictionary`.

    source:    local folder/file, or a hub repo id ("google/gemma-scope-2b-pt-res"); "owner/repo:sub/folder" and
               "hf://owner/repo/sub/folder" name the subfolder in the same string
    subfolder: the dictionary's folder inside `source` ("layer_20/width_16k/average_l0_71")
    format:    "auto" (detect from the files) or one of FORMATS
    dtype:     cast the weights (default: as stored)
    hook_in, hook_out, model: override what the files say or the repo layout implies
    """
    source, subfolder = split_source(source, subfolder)
    formats = FORMATS if format == "auto" else (format,)
    path = hub.resolve(source, subfolder, _patterns(formats), revision)
    fmt = detect(path) if format == "auto" else format
    repo = str(source) if hub.is_repo_id(str(source)) else ""
    d = reader(fmt).read(path, repo_id=repo, subfolder=subfolder or "", hook_in=hook_in, hook_out=hook_out, model=model)
    return _placed(d, device, dtype)


def load_transcoder_set(source: str | Path, subfolder: str | None = None, *, format: str = "auto", device: str = "cpu",
                        dtype: torch.dtype | str | None = None, model: str = "", n_layers: int | None = None,
                        revision: str | None = None) -> dict[int, Dictionary]:
    """{layer: transcoder} from a circuit-tracer config (YAML), a folder of our layer_L run folders, a
    sparsify release of per-layer MLP transcoders, or a folder of Llama Scope transcoder folders (LXTC).
    `n_layers`: fail unless every layer below it has one."""
    source, subfolder = split_source(source, subfolder)
    formats = SETS if format == "auto" else (format,)
    path = hub.resolve(source, subfolder, [p for f in formats for p in _set_patterns(f)], revision)
    fmt = next((f for f in formats if _claims_set(f, path)), None)
    if fmt is None and reader("circuit_tracer").is_clt(path):
        raise reader("circuit_tracer").clt_error(path)
    if fmt is None:
        raise ValueError(f"{path}: not a transcoder set; expected a circuit-tracer config.yaml / YAML, layer_<L>/ run folders "
                         "(cfg.json + sae.safetensors), sparsify hookpoint folders (layers.<L>.mlp/) or Llama Scope "
                         "folders (*/hyperparams.json + */checkpoints/final.safetensors).")
    loaded = _by_layer(reader(fmt).read_set(path, model=model), path)
    missing = sorted(set(range(n_layers)) - set(loaded)) if n_layers is not None else []
    if missing:
        raise ValueError(f"{path}: no transcoder for layers {missing}; a circuit needs one per layer.")
    return {layer: _placed(d, device, dtype) for layer, d in sorted(loaded.items())}


def _set_patterns(fmt: str) -> list[str]:
    files = reader(fmt).FILES
    return list(files) if fmt == "circuit_tracer" else [f"*/{name}" for name in files]


def _claims_set(fmt: str, path: Path) -> bool:
    if fmt == "interp":
        return path.is_dir() and any(reader("interp").claims(sub) for sub in path.iterdir() if sub.is_dir())
    return reader(fmt).claims_set(path)


def _by_layer(loaded: dict, path: Path) -> dict[int, Dictionary]:
    """Key transcoders by the layer their output hook lives in; dictionaries that are not transcoders are skipped."""
    from interp.model import hook_layer

    out: dict[int, Dictionary] = {}
    for name, d in loaded.items():
        if d.cfg.hook_in == d.cfg.hook_out or not d.cfg.hook_out.startswith("blocks."):
            continue
        layer = hook_layer(d.cfg.hook_out)
        if layer in out:
            raise ValueError(f"{path}: two transcoders for layer {layer} ({name} and another).")
        out[layer] = d
    if not out:
        raise ValueError(f"{path}: holds no transcoders (dictionaries whose hook_in differs from hook_out).")
    return out


def _placed(d: Dictionary, device: str, dtype) -> Dictionary:
    if dtype is not None:
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        d = d.to(dtype)
        d.cfg = d.cfg.replace(dtype=str(dtype).removeprefix("torch."))
    return d.to(device).eval()
