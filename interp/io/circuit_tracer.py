"""circuit-tracer transcoder sets and cross-layer transcoders (CLTs), in the two layouts it has used.

circuit-tracer 0.5.0 (circuit_tracer/utils/hf_utils.py, transcoder/single_layer_transcoder.py and
cross_layer_transcoder.py): a folder (a hub repo or its subfolder) with `config.yaml` holding model_kind
("transcoder_set" or "cross_layer_transcoder"), model_name, feature_input_hook, feature_output_hook and
optionally `transcoders`, a list of files (index = layer; "hf://owner/repo/file" or local); without it the
set is the folder's layer_{L}.safetensors. A set's file holds W_enc [d_transcoder, d_model],
W_dec [d_transcoder, d_model], b_enc, b_dec, optional W_skip [d_model, d_model] and optional
`activation_function.threshold` [d_transcoder]: encode act(x W_enc^T + b_enc) with act ReLU, or JumpReLU
pre * (pre > threshold) when the threshold is there, no input centring; decode codes W_dec + b_dec + x W_skip^T.
A CLT folder holds W_enc_{l}.safetensors (W_enc_{l} [d_transcoder, d_model], b_enc_{l}, b_dec_{l},
threshold_{l}) and W_dec_{l}.safetensors (W_dec_{l} [d_transcoder, L - l, d_model]): `transcoders.load_clt`
reads it (with `clt_fields` from here), since `interp` does not import `transcoders`.

The older layout (commit d797c82, June 2025, configs/*.yaml): any YAML with `transcoders: [{id, layer,
filepath}]`, files with W_dec stored [d_model, d_transcoder] (transposed on load), ReLU only; Gemma Scope
params.npz files (JumpReLU, `interp.io.gemma_scope`) in either layout. Hooks are
blocks.{layer}.{feature_input_hook} -> blocks.{layer}.{feature_output_hook}.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from interp.config import write_atomic_text
from interp.dictionary import Dictionary
from interp.io import gemma_scope, hub
from interp.io.build import build, read_safetensors

NAME = "circuit_tracer"
CONFIG = "config.yaml"
FILES = ("*.yaml", "*.yml", "layer_*.safetensors", "W_enc_*.safetensors", "W_dec_*.safetensors")
KEYS, OPTIONAL = {"W_enc", "W_dec", "b_enc", "b_dec"}, {"W_skip", "activation_function.threshold"}
CLT_HOOKS = ("hook_resid_mid", "hook_mlp_out")  # circuit-tracer's load_clt defaults


def config_file(path: Path) -> Path | None:
    """The set's YAML: the path itself, or config.yaml / the one YAML in a folder that lists `transcoders`."""
    candidates = [path] if path.is_file() else sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    for file in candidates:
        if file.suffix in (".yaml", ".yml") and ({"transcoders", "model_kind"} & set(_yaml(file))):
            return file
    return None


def claims_set(path: Path) -> bool:
    return config_file(path) is not None


def is_clt(path: Path) -> bool:
    """A CLT folder: ours (clt.json) or circuit-tracer's (model_kind cross_layer_transcoder, or W_enc_0 + W_dec_0)."""
    if path.is_file() or not path.exists():
        return False
    file = config_file(path)
    if file is not None:
        return _yaml(file).get("model_kind") == "cross_layer_transcoder"
    return (path / "clt.json").is_file() or ((path / "W_enc_0.safetensors").is_file() and (path / "W_dec_0.safetensors").is_file())


def clt_error(path: Path) -> ValueError:
    return ValueError(f"{path} holds a cross-layer transcoder, not per-layer transcoders: load it with "
                      "transcoders.load_clt(path), or transcoders.load_transcoder_set(path) for its per-layer views.")


def read_set(path: Path, model: str = "", **_) -> dict[int, Dictionary]:
    """{layer: transcoder} for the set whose YAML is `path` (or lies in the folder `path`)."""
    file = config_file(path)
    if file is None:
        raise FileNotFoundError(f"{path}: no circuit-tracer YAML (config.yaml with model_kind, or a 'transcoders' list).")
    cfg = _yaml(file)
    kind = cfg.get("model_kind", "transcoder_set")
    if kind == "cross_layer_transcoder":
        raise clt_error(file.parent)
    for key in ("feature_input_hook", "feature_output_hook"):
        if key not in cfg:
            raise ValueError(f"{file}: missing field {key!r}; a circuit-tracer config has model_name, feature_input_hook, "
                             "feature_output_hook and transcoders (or layer_<L>.safetensors beside it).")
    if kind != "transcoder_set":
        raise ValueError(f"{file}: model_kind {kind!r}; expected 'transcoder_set' or 'cross_layer_transcoder'.")
    legacy, files = _layer_files(cfg, file)
    out = {}
    for layer, uri in sorted(files.items()):
        hooks = {"hook_in": f"blocks.{layer}.{cfg['feature_input_hook']}", "hook_out": f"blocks.{layer}.{cfg['feature_output_hook']}",
                 "model": model or str(cfg.get("model_name", ""))}
        out[layer] = read_file(hub.resolve_uri(uri, file.parent), legacy, **hooks)
    return out


def _layer_files(cfg: dict, file: Path) -> tuple[bool, dict[int, str]]:
    """(legacy layout?, {layer: file reference}) from the config's `transcoders` or the layer_<L> files beside it."""
    entries = cfg.get("transcoders")
    if entries is None:
        found = {int(m.group(1)): p.name for p in file.parent.glob("layer_*.safetensors")
                 if (m := re.fullmatch(r"layer_(\d+)\.safetensors", p.name))}
        if not found:
            raise FileNotFoundError(f"{file}: no 'transcoders' list and no layer_<L>.safetensors beside it.")
        return False, found
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{file}: 'transcoders' should be a non-empty list, got {entries!r}.")
    if all(isinstance(e, str) for e in entries):
        return False, dict(enumerate(entries))
    out: dict[int, str] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("layer"), int) or "filepath" not in entry:
            raise ValueError(f"{file}: each transcoder needs an integer 'layer' and a 'filepath' (or every entry is a "
                             f"file path); got {entry!r}.")
        if entry["layer"] in out:
            raise ValueError(f"{file}: two transcoders for layer {entry['layer']}.")
        out[entry["layer"]] = entry["filepath"]
    return True, out


def read_file(file: Path, legacy: bool = False, **hooks) -> Dictionary:
    """One layer's transcoder: Gemma Scope npz, or circuit-tracer safetensors (W_dec [d_model, d_transcoder]
    when `legacy`, else [d_transcoder, d_model])."""
    if file.suffix == ".npz":
        return gemma_scope.read(file, **hooks)
    t = read_safetensors(file)
    if not KEYS <= set(t) or set(t) - KEYS - OPTIONAL:
        raise ValueError(f"{file}: tensors {sorted(t)}; a circuit-tracer transcoder holds {sorted(KEYS)}, optionally "
                         f"{sorted(OPTIONAL)}.")
    d_dict, d_model = t["W_enc"].shape if t["W_enc"].dim() == 2 else (None, None)
    W_dec = t["W_dec"].T if legacy else t["W_dec"]
    if d_dict is None or W_dec.shape != (d_dict, d_model):
        layout = "[d_model, d_transcoder] (the pre-0.5 layout its YAML implies)" if legacy else "[d_transcoder, d_model]"
        raise ValueError(f"{file}: W_enc {tuple(t['W_enc'].shape)} and W_dec {tuple(t['W_dec'].shape)}; expected "
                         f"W_enc [d_transcoder, d_model] and W_dec {layout}.")
    tensors = {"W_enc": t["W_enc"].T, "b_enc": t["b_enc"], "W_dec": W_dec, "b_dec": t["b_dec"]}
    skip = "W_skip" in t and bool(t["W_skip"].any())  # an all-zero W_skip (older writers) is no skip path
    if skip:
        tensors["W_skip"] = t["W_skip"].T
    arch = "jumprelu" if "activation_function.threshold" in t else "relu"
    if arch == "jumprelu":
        tensors["threshold"] = t["activation_function.threshold"].reshape(-1)
    return build(arch, tensors, str(file), subtract_b_dec=False, skip=skip, **hooks)


def clt_fields(folder: Path) -> dict:
    """CLTConfig fields (n_layers, d_model, d_dict, arch, hooks, model) for a circuit-tracer CLT folder."""
    folder = Path(folder)
    layers = sorted(int(m.group(1)) for p in folder.glob("W_enc_*.safetensors") if (m := re.fullmatch(r"W_enc_(\d+)\.safetensors", p.name)))
    if not layers or layers != list(range(len(layers))):
        raise FileNotFoundError(f"{folder}: expected W_enc_0..W_enc_<L-1>.safetensors (circuit-tracer's CLT layout), "
                                f"found layers {layers}.")
    with safe_open(folder / "W_enc_0.safetensors", framework="pt") as f:
        if "W_enc_0" not in f.keys():
            raise ValueError(f"{folder / 'W_enc_0.safetensors'}: no W_enc_0 tensor (found {sorted(f.keys())}).")
        (d_dict, d_model), jump = f.get_slice("W_enc_0").get_shape(), "threshold_0" in f.keys()
    if not jump:
        raise ValueError(f"{folder}: a ReLU CLT (no threshold_0); interp's CLTs are TopK or JumpReLU.")
    file = config_file(folder)
    cfg = _yaml(file) if file else {}
    hook_in, hook_out = cfg.get("feature_input_hook", CLT_HOOKS[0]), cfg.get("feature_output_hook", CLT_HOOKS[1])
    return {"n_layers": len(layers), "d_model": d_model, "d_dict": d_dict, "arch": "jumprelu", "model": str(cfg.get("model_name", "")),
            "hook_in": f"blocks.{{layer}}.{hook_in}", "hook_out": f"blocks.{{layer}}.{hook_out}"}


def save_circuit_tracer_set(transcoders: dict[int, Dictionary], folder: str | Path, model_name: str = "") -> Path:
    """Write ReLU / JumpReLU transcoders as circuit-tracer 0.5.0 reads a hub release: layer_L.safetensors per
    layer and config.yaml (model_kind transcoder_set)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hooks = set()
    for layer, tc in sorted(transcoders.items()):
        cfg = tc.cfg
        if cfg.arch not in ("relu", "jumprelu") or cfg.subtract_b_dec or cfg.d_out != cfg.d_in:
            raise ValueError(f"layer {layer}: circuit-tracer's transcoders are ReLU or JumpReLU, uncentred, d_out == d_in; "
                             f"got arch={cfg.arch}, subtract_b_dec={cfg.subtract_b_dec}, d_in={cfg.d_in}, d_out={cfg.d_out}.")
        hooks.add((_suffix(cfg.hook_in, layer), _suffix(cfg.hook_out, layer)))
        tensors = {"W_enc": tc.W_enc.T, "W_dec": tc.W_dec, "b_enc": tc.b_enc, "b_dec": tc.b_dec}
        if cfg.skip:
            tensors["W_skip"] = tc.W_skip.T
        if cfg.arch == "jumprelu":
            tensors["activation_function.threshold"] = tc.threshold
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, folder / f"layer_{layer}.safetensors")
    if len(hooks) != 1:
        raise ValueError(f"circuit-tracer sets read and write the same hook in every layer; got {sorted(hooks)}.")
    (hook_in, hook_out), = hooks
    config = {"model_kind": "transcoder_set", "model_name": model_name or next(iter(transcoders.values())).cfg.model,
              "feature_input_hook": hook_in, "feature_output_hook": hook_out}
    write_atomic_text(folder / CONFIG, "".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))  # JSON scalars are YAML
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
