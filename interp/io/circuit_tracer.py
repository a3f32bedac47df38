"""circuit-tracer transcoder sets: a YAML config (model_name, feature_input_hook, feature_output_hook and
transcoders: [{id, layer, filepath}]) naming one file per layer, "hf://owner/repo/file?revision=R" or local.

Matched against safety-research/circuit-tracer (commit d797c82, June 2025),
circuit_tracer/transcoder/single_layer_transcoder.py and configs/*.yaml:
  - files in a "gemma-scope" hub repo are Gemma Scope params.npz JumpReLU transcoders (`interp.io.gemma_scope`);
  - every other file is a ReLU transcoder in safetensors: W_enc [d_transcoder, d_model] and
    W_dec [d_model, d_transcoder] (both transposed on load), b_enc, b_dec, W_skip [d_model, d_model]
    applied as x @ W_skip.T; encode relu(x W_enc + b_enc) without centring.
Hooks are blocks.{layer}.{feature_input_hook} -> blocks.{layer}.{feature_output_hook}. An all-zero W_skip
reads as no skip path (the same function); `save_circuit_tracer_set` writes zeros there for plain
transcoders because circuit-tracer's loader requires the key.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from interp.config import write_atomic_text
from interp.dictionary import Dictionary
from interp.io import gemma_scope, hub
from interp.io.build import build, read_safetensors

NAME = "circuit_tracer"
FILES = ("*.yaml", "*.yml")
RELU_KEYS = {"W_enc", "W_dec", "b_enc", "b_dec"}


def config_file(path: Path) -> Path | None:
    """The set's YAML (the path itself, or the one YAML in a folder that lists `transcoders`)."""
    candidates = [path] if path.is_file() else sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    for file in candidates:
        if file.suffix in (".yaml", ".yml") and "transcoders" in _yaml(file):
            return file
    return None


def claims_set(path: Path) -> bool:
    return config_file(path) is not None


def read_set(path: Path, model: str = "", **_) -> dict[int, Dictionary]:
    """{layer: transcoder} for the set whose YAML is `path` (or lies in the folder `path`)."""
    file = config_file(path)
    if file is None:
        raise FileNotFoundError(f"{path}: no circuit-tracer YAML (with a 'transcoders' list) found.")
    cfg = _yaml(file)
    for key in ("feature_input_hook", "feature_output_hook", "transcoders"):
        if key not in cfg:
            raise ValueError(f"{file}: missing field {key!r}; a circuit-tracer config has model_name, feature_input_hook, "
                             "feature_output_hook and transcoders.")
    out: dict[int, Dictionary] = {}
    for entry in sorted(cfg["transcoders"], key=lambda e: e.get("layer", -1)):
        if not isinstance(entry, dict) or not isinstance(entry.get("layer"), int) or "filepath" not in entry:
            raise ValueError(f"{file}: each transcoder needs an integer 'layer' and a 'filepath'; got {entry!r}.")
        layer = entry["layer"]
        if layer in out:
            raise ValueError(f"{file}: two transcoders for layer {layer}.")
        hooks = {"hook_in": f"blocks.{layer}.{cfg['feature_input_hook']}", "hook_out": f"blocks.{layer}.{cfg['feature_output_hook']}",
                 "model": model or str(cfg.get("model_name", ""))}
        out[layer] = read_file(hub.resolve_uri(entry["filepath"], file.parent), "gemma-scope" in entry["filepath"], **hooks)
    return out


def read_file(file: Path, gemma: bool = False, **hooks) -> Dictionary:
    """One layer's transcoder: Gemma Scope npz or circuit-tracer's ReLU safetensors."""
    if gemma or file.suffix == ".npz":
        return gemma_scope.read(file, **hooks)
    t = read_safetensors(file)
    if not RELU_KEYS <= set(t) or set(t) - RELU_KEYS - {"W_skip"}:
        raise ValueError(f"{file}: tensors {sorted(t)}; a circuit-tracer ReLU transcoder holds {sorted(RELU_KEYS)} and W_skip.")
    tensors = {"W_enc": t["W_enc"].T, "b_enc": t["b_enc"], "W_dec": t["W_dec"].T, "b_dec": t["b_dec"]}
    skip = "W_skip" in t and bool(t["W_skip"].any())
    if skip:
        tensors["W_skip"] = t["W_skip"].T
    return build("relu", tensors, str(file), subtract_b_dec=False, skip=skip, **hooks)


def save_circuit_tracer_set(transcoders: dict[int, Dictionary], folder: str | Path, model_name: str = "",
                            name: str = "transcoders") -> Path:
    """Write ReLU transcoders as circuit-tracer reads them: layer_L.safetensors per layer and NAME.yaml."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hooks = set()
    entries = []
    for layer, tc in sorted(transcoders.items()):
        cfg = tc.cfg
        if cfg.arch != "relu" or cfg.subtract_b_dec or cfg.d_out != cfg.d_in:
            raise ValueError(f"layer {layer}: circuit-tracer's safetensors transcoders are ReLU, uncentred, d_out == d_in; "
                             f"got arch={cfg.arch}, subtract_b_dec={cfg.subtract_b_dec}, d_in={cfg.d_in}, d_out={cfg.d_out}.")
        hooks.add((_suffix(cfg.hook_in, layer), _suffix(cfg.hook_out, layer)))
        W_skip = tc.W_skip.T if cfg.skip else torch.zeros(cfg.d_out, cfg.d_in, dtype=tc.W_enc.dtype)
        tensors = {"W_enc": tc.W_enc.T, "W_dec": tc.W_dec.T, "b_enc": tc.b_enc, "b_dec": tc.b_dec, "W_skip": W_skip}
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, folder / f"layer_{layer}.safetensors")
        entries.append({"id": f"{name}-{layer}", "layer": layer, "filepath": f"layer_{layer}.safetensors"})
    if len(hooks) != 1:
        raise ValueError(f"circuit-tracer sets read and write the same hook in every layer; got {sorted(hooks)}.")
    (hook_in, hook_out), = hooks
    config = {"model_name": model_name or next(iter(transcoders.values())).cfg.model, "feature_input_hook": hook_in,
              "feature_output_hook": hook_out, "transcoders": entries}
    write_atomic_text(folder / f"{name}.yaml", _dump_yaml(config))
    return folder


def _suffix(hook: str, layer: int) -> str:
    prefix = f"blocks.{layer}."
    if not hook.startswith(prefix):
        raise ValueError(f"hook {hook!r} is not inside blocks.{layer}; circuit-tracer names hooks relative to the block.")
    return hook.removeprefix(prefix)


def _yaml(file: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid YAML: {err}") from None
    return data if isinstance(data, dict) else {}


def _dump_yaml(config: dict) -> str:
    """YAML in circuit-tracer's config style (JSON scalars are valid YAML)."""
    lines = [f"{k}: {json.dumps(config[k])}" for k in ("model_name", "feature_input_hook", "feature_output_hook")]
    lines.append("transcoders:")
    for e in config["transcoders"]:
        lines += [f"  - id: {json.dumps(e['id'])}", f"    layer: {e['layer']}", f"    filepath: {json.dumps(e['filepath'])}"]
    return "\n".join(lines) + "\n"
