"""Gemma Scope (google/gemma-scope-*) JumpReLU SAEs and transcoders: `params.npz` (or `params.safetensors`)
holding W_enc [d_model, d_sae], W_dec [d_sae, d_model], b_enc, b_dec and threshold [d_sae].

Their forward (the Gemma Scope tutorial's JumpReLUSAE, SAELens's `gemma_2_sae_huggingface_loader` and
circuit-tracer's `load_gemma_scope_transcoder` all agree): pre = x W_enc + b_enc (no input centring),
codes = relu(pre) * (pre > threshold), out = codes W_dec + b_dec. That is our jumprelu with
subtract_b_dec=False. The hook, model and layer come from the repo layout
("google/gemma-scope-2b-pt-res" + "layer_20/width_16k/average_l0_71") or from the caller.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from interp.dictionary import Dictionary
from interp.io.build import build, read_safetensors

NAME = "gemma_scope"
FILES = ("params.npz", "params.safetensors")
KEYS = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")
MODELS = {"2b-it": "gemma-2-2b-it", "9b-it": "gemma-2-9b-it", "27b-it": "gemma-2-27b-it",
          "2b": "gemma-2-2b", "9b": "gemma-2-9b", "27b": "gemma-2-27b"}  # substring of the repo id -> model
HOOKS = {"transcoders": ("blocks.{L}.ln2.hook_normalized", "blocks.{L}.hook_mlp_out"),
         "res": ("blocks.{L}.hook_resid_post",) * 2, "mlp": ("blocks.{L}.hook_mlp_out",) * 2,
         "att": ("blocks.{L}.attn.hook_z",) * 2}  # repo id suffix -> (hook_in, hook_out)


def claims(folder: Path) -> bool:
    return any((folder / name).is_file() for name in FILES)


def read(path: Path, repo_id: str = "", subfolder: str = "", hook_in: str = "", hook_out: str = "",
         model: str = "", **_) -> Dictionary:
    """The JumpReLU dictionary in `path` (a folder holding params.npz, or the file itself)."""
    file = path if path.is_file() else next(path / n for n in FILES if (path / n).is_file())
    tensors = read_params(file)
    guess_in, guess_out, guess_model = infer(repo_id or _repo_from_path(file), subfolder or str(file.parent))
    hook_in, model = hook_in or guess_in, model or guess_model
    hook_out = hook_out or (guess_out if guess_in == hook_in else hook_in)
    return build("jumprelu", tensors, str(file), hook_in=hook_in, hook_out=hook_out, model=model,
                 subtract_b_dec=False, training={"source": f"{repo_id}/{subfolder}".strip("/")} if repo_id else {})


def read_params(file: Path) -> dict[str, torch.Tensor]:
    """The five Gemma Scope arrays as tensors (npz read with allow_pickle=False)."""
    if file.suffix == ".safetensors":
        raw = read_safetensors(file)
    else:
        try:
            with np.load(file, allow_pickle=False) as npz:
                raw = {k: torch.from_numpy(np.array(npz[k])) for k in npz.files}
        except FileNotFoundError:
            raise FileNotFoundError(f"{file} not found.") from None
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"{file} is not a readable .npz of arrays (truncated, foreign or pickled?): {err}") from None
    raw = {_canonical(k): v for k, v in raw.items()}
    missing, extra = [k for k in KEYS if k not in raw], sorted(set(raw) - set(KEYS))
    if missing or extra:  # e.g. Gemma Scope 2's affine_skip_connection: dropping it would misread the transcoder
        raise ValueError(f"{file}: missing arrays {missing}, unexpected {extra}; interp reads Gemma Scope files holding "
                         f"exactly {list(KEYS)}.")
    return {k: raw[k] for k in KEYS}


def _canonical(key: str) -> str:
    return {k.lower(): k for k in KEYS}.get(key.lower(), key)


def infer(repo_id: str, subfolder: str) -> tuple[str, str, str]:
    """(hook_in, hook_out, model) from a Gemma Scope repo id and the layer_N folder; "" where unknown."""
    match = re.search(r"layer_(\d+)", subfolder)
    kind = next((k for k in HOOKS if repo_id.endswith("-" + k)), None)
    model = next((m for key, m in MODELS.items() if f"-{key}-" in repo_id or repo_id.endswith(f"-{key}")), "")
    if match is None or kind is None:
        return "", "", model
    hook_in, hook_out = (h.format(L=match.group(1)) for h in HOOKS[kind])
    return hook_in, hook_out, model


def _repo_from_path(file: Path) -> str:
    """The repo id when `file` lies in a hub cache (models--owner--name/snapshots/...) or a folder named like the repo."""
    for part in reversed(file.parts):
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/", 1)
        if part.startswith("gemma-scope"):
            return "google/" + part
    return ""
