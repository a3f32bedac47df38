"""Llama Scope (fnlp/Llama3_1-8B-Base-LX{R,A,M,TC}-{8,32}x) JumpReLU SAEs and transcoders, trained with
OpenMOSS's Language-Model-SAEs. One folder per dictionary (Llama3_1-8B-Base-L15R-8x/) holding

  hyperparams.json               d_model, d_sae, act_fn "jumprelu", jump_relu_threshold (one scalar for every
                                 latent), norm_activation "dataset-wise", dataset_average_activation_norm
                                 {in, out}, hook_point_in, hook_point_out (TransformerLens names), ...
  checkpoints/final.safetensors  encoder.weight [d_sae, d_model], encoder.bias [d_sae],
                                 decoder.weight [d_model, d_sae], decoder.bias [d_model]

Forward, matched against SAE-Lens 6.54.12's own code (`llama_scope_sae_huggingface_loader`, then
`SAE.from_pretrained` folding the norm scaling factor): the dictionary was trained on inputs scaled by
s_in = sqrt(d_model) / norm_in, so on raw activations x [batch, d_model]

  pre = (s_in x) W_enc + b_enc,   codes = pre * (pre > s_in t),   out = (codes W_dec + b_dec) / s_out

with no input centring. SAE-Lens scales the threshold by s_in as written here and divides the decoder by
s_in; for SAEs s_out = s_in (SAE-Lens's reading), for transcoders (hook_point_in != hook_point_out, the
LXTC releases, which SAE-Lens does not load) s_out = sqrt(d_model) / norm_out, the scale their target
was trained at. That is our jumprelu with W_enc*s_in, threshold s_in t, W_dec/s_out, b_dec/s_out and
subtract_b_dec=False. `sparsity_include_decoder_norm` is ignored, as SAE-Lens ignores it (it gates on
pre * |W_dec row| in training; the two agree when decoder rows have unit norm; otherwise we warn).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import torch

from interp.dictionary import Dictionary
from interp.io.build import build, read_safetensors

NAME = "llama_scope"
CONFIG, WEIGHTS = "hyperparams.json", "checkpoints/final.safetensors"
FILES = (CONFIG, WEIGHTS)
KEYS = {"W_enc": "encoder.weight", "b_enc": "encoder.bias", "W_dec": "decoder.weight", "b_dec": "decoder.bias"}
EXTRA = "dataset_average_activation_norm."  # Language-Model-SAEs may save these scalars beside the weights
MODELS = {"Llama3_1-8B-Base": "meta-llama/Llama-3.1-8B"}  # release name prefix -> model (as SAE-Lens names it)


def claims(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()


def claims_set(folder: Path) -> bool:
    return folder.is_dir() and any(claims(sub) for sub in folder.iterdir() if sub.is_dir())


def read(path: Path, repo_id: str = "", subfolder: str = "", hook_in: str = "", hook_out: str = "",
         model: str = "", **_) -> Dictionary:
    """The JumpReLU SAE or transcoder in the Llama Scope folder `path`, norms folded (see the module docstring)."""
    folder = path.parent if path.name == CONFIG else path
    cfg = hyperparams(folder / CONFIG)
    t = read_safetensors(folder / WEIGHTS)
    missing = sorted(set(KEYS.values()) - set(t))
    foreign = sorted(k for k in set(t) - set(KEYS.values()) if not k.startswith(EXTRA))
    if missing or foreign:
        raise ValueError(f"{folder / WEIGHTS}: missing tensors {missing}, unexpected {foreign}; a Llama Scope "
                         f"checkpoint holds {sorted(KEYS.values())}.")
    s_in, s_out = scales(cfg, folder / CONFIG)
    tensors = folded({name: t[key] for name, key in KEYS.items()}, cfg["jump_relu_threshold"], s_in, s_out)
    if cfg.get("sparsity_include_decoder_norm"):
        _warn_decoder_norms(t["decoder.weight"], folder)
    in_ = hook_in or cfg["hook_point_in"]
    out = hook_out or (cfg["hook_point_out"] if in_ == cfg["hook_point_in"] else in_)
    return build("jumprelu", tensors, str(folder), {"d_in": cfg["d_model"], "d_dict": cfg["d_sae"]}, hook_in=in_,
                 hook_out=out, model=model or infer_model(repo_id, folder), subtract_b_dec=False,
                 training={"source": f"{repo_id}/{subfolder}".strip("/")} if repo_id else {})


def read_set(folder: Path, model: str = "", **_) -> dict[str, Dictionary]:
    """{folder name: dictionary} for every Llama Scope folder directly under `folder` (a release)."""
    subs = sorted(s for s in folder.iterdir() if s.is_dir() and claims(s))
    if not subs:
        raise FileNotFoundError(f"{folder} holds no Llama Scope folders (*/{CONFIG} + */{WEIGHTS}).")
    return {s.name: read(s, model=model) for s in subs}


def hyperparams(path: Path) -> dict:
    """hyperparams.json, checked for the fields the forward needs (errors name the field and what was expected)."""
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found.") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{path} is not valid JSON ({type(err).__name__}: {err}).") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(cfg).__name__}.")
    for name in ("d_model", "d_sae"):
        if not isinstance(cfg.get(name), int) or isinstance(cfg[name], bool) or cfg[name] <= 0:
            raise ValueError(f"{path}: field {name!r} should be a positive integer, got {cfg.get(name)!r}.")
    if cfg.get("act_fn", "jumprelu") != "jumprelu":
        raise ValueError(f"{path}: act_fn is {cfg['act_fn']!r}; interp reads Llama Scope's 'jumprelu' releases only.")
    if not _number(cfg.get("jump_relu_threshold")):
        raise ValueError(f"{path}: field 'jump_relu_threshold' should be a number, got {cfg.get('jump_relu_threshold')!r}.")
    if cfg.get("apply_decoder_bias_to_pre_encoder"):
        raise ValueError(f"{path}: apply_decoder_bias_to_pre_encoder is true; no Llama Scope release centres inputs "
                         "and SAE-Lens ignores the field, so interp refuses rather than guess.")
    if not isinstance(cfg.get("hook_point_in"), str) or not cfg["hook_point_in"]:
        raise ValueError(f"{path}: field 'hook_point_in' should name the hook the dictionary reads.")
    cfg.setdefault("hook_point_out", cfg["hook_point_in"])
    return cfg


def scales(cfg: dict, path: Path) -> tuple[float, float]:
    """(s_in, s_out): the factors raw activations were multiplied by in training (1 when already folded)."""
    mode = cfg.get("norm_activation", "dataset-wise")
    if mode == "inference":  # Language-Model-SAEs' marker for weights with the dataset norm already folded in
        return 1.0, 1.0
    if mode != "dataset-wise":
        raise ValueError(f"{path}: norm_activation is {mode!r}; only 'dataset-wise' (a constant per hook, foldable "
                         "into the weights) or 'inference' can be read: per-token or per-batch norms are not linear.")
    norms = cfg.get("dataset_average_activation_norm")
    transcoder = cfg["hook_point_out"] != cfg["hook_point_in"]
    needed = ("in", "out") if transcoder else ("in",)
    if not isinstance(norms, dict) or not all(_number(norms.get(k)) and norms[k] > 0 for k in needed):
        raise ValueError(f"{path}: dataset_average_activation_norm should hold positive numbers for {list(needed)} "
                         f"(norm_activation is 'dataset-wise'), got {norms!r}.")
    root = math.sqrt(cfg["d_model"])
    return root / norms["in"], root / norms["out" if transcoder else "in"]


def folded(t: dict[str, torch.Tensor], threshold: float, s_in: float, s_out: float) -> dict[str, torch.Tensor]:
    """Our layout (W_enc [d_in, d_dict], W_dec [d_dict, d_out], ...) acting on raw activations. Arithmetic
    in at least float32 (a fold in bfloat16 would round), as SAE-Lens does it: W_enc * s_in, W_dec / s_out."""
    t = {k: v.to(torch.promote_types(v.dtype, torch.float32)) for k, v in t.items()}
    if t["W_enc"].dim() != 2 or t["W_dec"].dim() != 2:
        raise ValueError(f"encoder.weight and decoder.weight should be matrices, got shapes "
                         f"{tuple(t['W_enc'].shape)} and {tuple(t['W_dec'].shape)}.")
    d_sae = t["W_enc"].shape[0]
    return {"W_enc": t["W_enc"].T * s_in, "b_enc": t["b_enc"], "W_dec": t["W_dec"].T / s_out, "b_dec": t["b_dec"] / s_out,
            "threshold": torch.full((d_sae,), threshold * s_in, dtype=t["W_enc"].dtype)}


def infer_model(repo_id: str, folder: Path) -> str:
    """The model a release was trained on, from its repo id or folder name ("" when unknown)."""
    names = [repo_id.split("/")[-1], *reversed(folder.parts)]
    return next((model for prefix, model in MODELS.items() for name in names
                 if re.match(re.escape(prefix) + r"-", name)), "")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _warn_decoder_norms(decoder: torch.Tensor, folder: Path) -> None:
    norms = decoder.float().norm(dim=0)
    if (norms - 1).abs().max() > 1e-3:
        warnings.warn(f"{folder}: sparsity_include_decoder_norm is true but decoder norms range {norms.min():.3g}-"
                      f"{norms.max():.3g}; like SAE-Lens, interp gates on the pre-activation alone, so latents near "
                      "the threshold may fire differently from the training code.", stacklevel=3)
