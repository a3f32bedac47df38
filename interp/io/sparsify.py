"""EleutherAI sparsify: one folder per hookpoint holding cfg.json (SparseCoderConfig fields plus d_in) and
sae.safetensors with encoder.weight [num_latents, d_in], encoder.bias, W_dec [num_latents, d_in], b_dec [d_in]
and, for skip transcoders, W_skip [d_in, d_in]; a release holds many such folders.

Matched against sparsify's `SparseCoder` (sparsify/sparse_coder.py, fused_encoder.py): encode subtracts
b_dec unless `transcode`, then relu(x W^T + b) and the top `k` per token; decode is codes W_dec + b_dec,
plus x W_skip^T when `skip_connection`. That is our topk with W_enc = encoder.weight^T and W_skip^T.
`normalize_decoder` only constrains training (the forward never divides by norms), `multi_topk` is a
training loss; the "groupmax" activation has no counterpart here and is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from interp.config import load_json
from interp.dictionary import Dictionary
from interp.io.build import build, module_hooks, read_safetensors

NAME = "sparsify"
FILES = ("cfg.json", "sae.safetensors")
WEIGHTS = "sae.safetensors"


def claims(folder: Path) -> bool:
    """sparsify's file names with a config that has `k` and no `arch` (ours uses the same names)."""
    if not (folder / "cfg.json").is_file() or not (folder / WEIGHTS).is_file():
        return False
    try:
        cfg = json.loads((folder / "cfg.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(cfg, dict) and "arch" not in cfg and "k" in cfg and "d_in" in cfg


def claims_set(folder: Path) -> bool:
    return any(claims(sub) for sub in folder.iterdir() if sub.is_dir()) if folder.is_dir() else False


def read(folder: Path, hook_in: str = "", hook_out: str = "", model: str = "", **_) -> Dictionary:
    """The sparse coder saved in `folder` (its name is the hookpoint, e.g. layers.6 or layers.6.mlp)."""
    path = folder / "cfg.json"
    cfg = load_json(path)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object.")
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise ValueError(f"{path}: field 'activation' is {activation!r}; interp reads sparsify's 'topk' coders only.")
    for name in ("k", "d_in"):
        if not isinstance(cfg.get(name), int) or isinstance(cfg.get(name), bool) or cfg[name] <= 0:
            raise ValueError(f"{path}: field {name!r} should be a positive integer, got {cfg.get(name)!r}.")
    t = read_safetensors(folder / WEIGHTS)
    transcode, skip = bool(cfg.get("transcode", False)), bool(cfg.get("skip_connection", False))
    expected = {"encoder.weight", "encoder.bias", "W_dec", "b_dec"} | ({"W_skip"} if skip else set())
    if set(t) != expected:
        raise ValueError(f"{folder / WEIGHTS}: tensors {sorted(t)} do not match cfg.json (expected {sorted(expected)}).")
    tensors = {"W_enc": t["encoder.weight"].T, "b_enc": t["encoder.bias"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if skip:
        tensors["W_skip"] = t["W_skip"].T
    guess_in, guess_out = module_hooks(folder.name, transcode)
    declared = {"d_in": cfg["d_in"], "d_dict": cfg.get("num_latents") or cfg["d_in"] * cfg.get("expansion_factor", 32)}
    return build("topk", tensors, str(folder), declared, k=cfg["k"], hook_in=hook_in or guess_in,
                 hook_out=hook_out or (guess_out if not hook_in else hook_in), model=model,
                 subtract_b_dec=not transcode, skip=skip)


def read_set(folder: Path, **hints) -> dict[str, Dictionary]:
    """{hookpoint: dictionary} for every sparsify folder directly under `folder` (a release)."""
    subs = sorted((s for s in folder.iterdir() if s.is_dir() and claims(s)), key=lambda s: s.name)
    if not subs:
        raise FileNotFoundError(f"{folder} holds no sparsify hookpoint folders (*/cfg.json + */{WEIGHTS}).")
    return {s.name: read(s, model=hints.get("model", "")) for s in subs}
