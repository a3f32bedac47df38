"""dictionary_learning (saprmarks/dictionary_learning): `ae.pt` (a state dict saved with torch.save) beside
`config.json` ({"trainer": {"dict_class", "activation_dim", "dict_size", "k", "layer", "lm_name",
"submodule_name", ...}, "buffer": {...}}), one folder per trained dictionary.

Read with torch.load(weights_only=True) only. Matched against dictionary_learning/dictionary.py and
trainers/ (commit 60ec6bf, Aug 2025); state-dict keys decide the class:
  AutoEncoder        bias, encoder.weight [F, d], encoder.bias, decoder.weight [d, F]
                     relu(W (x - bias) + b), decoded + bias                       -> relu, centred
  AutoEncoderNew     encoder.weight/bias, decoder.weight/bias (no centring)        -> relu
  GatedAutoEncoder   decoder_bias, encoder.weight, r_mag, gate_bias, mag_bias, decoder.weight
                     gate (x_enc + gate_bias > 0) * relu(exp(r_mag) x_enc + mag_bias) -> jumprelu, folded exactly:
                     W_enc*exp(r_mag), b_enc = mag_bias, threshold = mag_bias - exp(r_mag) gate_bias
  JumpReluAutoEncoder W_enc [d, F], b_enc, W_dec [F, d], b_dec, threshold (no centring) -> jumprelu
  AutoEncoderTopK    encoder.*, decoder.weight, b_dec, k, threshold; top k of relu(W(x - b_dec) + b) -> topk
  BatchTopKSAE       same keys; inference keeps relu(pre) > threshold                -> batchtopk
  MatryoshkaBatchTopKSAE W_enc, b_enc, W_dec, b_dec, k, threshold, group_sizes       -> batchtopk (same inference)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from interp.dictionary import Dictionary
from interp.io.build import build, module_hooks, read_torch_state

NAME = "dictionary_learning"
FILES = ("ae.pt", "config.json")


def claims(folder: Path) -> bool:
    return (folder / "ae.pt").is_file()


def read(path: Path, hook_in: str = "", hook_out: str = "", model: str = "", **_) -> Dictionary:
    """The dictionary in `path` (a folder with ae.pt and config.json, or the ae.pt file)."""
    file = path if path.is_file() else path / "ae.pt"
    trainer = _trainer(file.parent / "config.json")
    s = read_torch_state(file)
    try:
        arch, tensors, fields = _convert(s, trainer, file)
    except KeyError as err:
        raise ValueError(f"{file}: missing tensor {err} for the dictionary_learning class its other keys suggest.") from None
    guess = module_hooks(trainer["submodule_name"], False)[0] if trainer.get("submodule_name") else ""
    if not guess and isinstance(trainer.get("layer"), int):
        guess = f"blocks.{trainer['layer']}.hook_resid_post"  # as SAELens reads these releases
    declared = {k: trainer[n] for k, n in (("d_in", "activation_dim"), ("d_dict", "dict_size")) if isinstance(trainer.get(n), int)}
    return build(arch, tensors, str(file), declared, hook_in=hook_in or guess, hook_out=hook_out or hook_in or guess,
                 model=model or str(trainer.get("lm_name", "")), **fields)


def _trainer(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}).") from None
    trainer = cfg.get("trainer", {}) if isinstance(cfg, dict) else {}
    return trainer if isinstance(trainer, dict) else {}


def _convert(s: dict[str, torch.Tensor], trainer: dict, file: Path) -> tuple[str, dict, dict]:
    """(our arch, tensors in our layout, config fields) from a dictionary_learning state dict."""
    keys = set(s)
    if {"gate_bias", "mag_bias", "r_mag"} <= keys:
        scale = s["r_mag"].exp()
        return "jumprelu", {"W_enc": s["encoder.weight"].T * scale, "b_enc": s["mag_bias"],
                            "W_dec": s["decoder.weight"].T, "b_dec": s["decoder_bias"],
                            "threshold": s["mag_bias"] - scale * s["gate_bias"]}, {}
    if {"W_enc", "threshold"} <= keys and "k" not in keys:
        return "jumprelu", {n: s[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}, {"subtract_b_dec": False}
    if "k" in keys:
        enc = (s["W_enc"], s["b_enc"], s["W_dec"]) if "W_enc" in keys else (s["encoder.weight"].T, s["encoder.bias"],
                                                                            s["decoder.weight"].T)
        tensors = {"W_enc": enc[0], "b_enc": enc[1], "W_dec": enc[2], "b_dec": s["b_dec"]}
        dict_class = str(trainer.get("dict_class", ""))
        if "W_enc" not in keys and not dict_class:
            raise ValueError(f"{file}: AutoEncoderTopK and BatchTopKSAE save the same keys; config.json beside it "
                             "(trainer.dict_class) is needed to tell which one this is.")
        fields = {"k": int(s["k"])}
        if "W_enc" not in keys and "BatchTopK" not in dict_class:
            return "topk", tensors, fields
        return "batchtopk", {**tensors, "threshold": s["threshold"].to(tensors["W_enc"].dtype)}, fields
    if {"bias", "encoder.weight", "decoder.weight"} <= keys:
        return "relu", {"W_enc": s["encoder.weight"].T, "b_enc": s["encoder.bias"], "W_dec": s["decoder.weight"].T,
                        "b_dec": s["bias"]}, {}
    if {"encoder.weight", "decoder.weight", "decoder.bias"} <= keys:
        return "relu", {"W_enc": s["encoder.weight"].T, "b_enc": s["encoder.bias"], "W_dec": s["decoder.weight"].T,
                        "b_dec": s["decoder.bias"]}, {"subtract_b_dec": False}
    raise ValueError(f"{file}: state-dict keys {sorted(keys)} match no dictionary_learning class interp reads "
                     "(AutoEncoder, AutoEncoderNew, GatedAutoEncoder, JumpReluAutoEncoder, AutoEncoderTopK, "
                     "BatchTopKSAE, MatryoshkaBatchTopKSAE).")
