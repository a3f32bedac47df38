"""Read and write SAELens's on-disk layout: a folder holding cfg.json and sae_weights.safetensors.

Matched against SAELens 6.x as of 6.49.2 (decoderesearch/SAELens): `SAEConfig.to_dict` and
`SAE.save_model` in sae_lens/saes/sae.py (fields d_in, d_sae, dtype, device, apply_b_dec_to_input,
normalize_activations, reshape_activations, metadata, architecture); `TopKSAEConfig` in
saes/topk_sae.py (k, rescale_acts_by_decoder_norm); the `threshold` tensor in saes/jumprelu_sae.py;
saes/batchtopk_sae.py, which saves a BatchTopK SAE for inference as "jumprelu" with its global
threshold repeated per latent; and `handle_pre_6_0_config` in loading/pretrained_sae_loaders.py,
which reads the older flat layout (hook_name, model_name, ... at top level).

SAELens "standard" <-> relu, "topk" <-> topk, "jumprelu" <-> jumprelu. Our batchtopk is written the
way SAELens writes it (jumprelu); a SAELens "batchtopk" training checkpoint (scalar topk_threshold)
reads as batchtopk. Our whole config rides along in metadata["interp"], so a round trip keeps the
architecture and training settings; a foreign file gets placeholder training-only coefficients,
which do not affect encode or decode.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from interp.config import from_dict, load_json, to_dict, write_atomic_text
from interp.dictionary import Dictionary, DictionaryConfig, architecture, read_weights

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
# SAELens picks the 6.x layout over the flat one when metadata.sae_lens_version >= 6.0.0.
LAYOUT_VERSION = "6.0.0"
BASE = ("W_enc", "b_enc", "W_dec", "b_dec")

WRITE = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu",
         "matryoshka": "jumprelu"}  # ours -> SAELens
READ = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk", "gated": "jumprelu",
        "transcoder": "relu", "skip_transcoder": "relu", "jumprelu_transcoder": "jumprelu",
        "jumprelu_skip_transcoder": "jumprelu"}  # SAELens -> ours
SKIP = {"relu": "skip_transcoder", "jumprelu": "jumprelu_skip_transcoder"}  # ours, as a skip transcoder -> SAELens
TRANSCODERS = {"relu": "transcoder", "jumprelu": "jumprelu_transcoder", "batchtopk": "jumprelu_transcoder",
               "matryoshka": "jumprelu_transcoder"}  # ours, as a transcoder -> SAELens
PLACEHOLDERS = {"relu": {"l1_coeff": 1.0}, "jumprelu": {"l0_coeff": 1.0}}  # training-only, not in SAELens files
META_TO_TRAINING = {"dataset_path": "source", "context_size": "n_ctx"}
FLAT_RENAMES = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index", "activation_fn_str": "activation_fn"}
FLAT_META = ("model_name", "hook_name", "hook_head_index", "prepend_bos", "context_size", "dataset_path",
             "sae_lens_version", "sae_lens_training_version")
CHOICES = {"reshape_activations": ("none",), "activation_fn": ("relu", "topk")}  # values we can honour

WRITE_EXTRA = {"jumprelu": lambda d: {"threshold": d.threshold},  # our arch -> its extra SAELens tensors
               "batchtopk": lambda d: {"threshold": d.threshold.expand(d.d_dict)},
               "matryoshka": lambda d: {"threshold": d.threshold.expand(d.d_dict)}}


def _log_threshold(t, path):
    """SAELens gates at threshold.relu(); thresholds <= 0 become the dtype's smallest positive normal."""
    th = t["threshold"]
    return {"log_threshold": th.clamp_min(torch.finfo(th.dtype).tiny).log()}


def _gated(t, path):
    """SAELens gated: (x W + b_gate > 0) * relu(x W e^r + b_mag) is exactly our jumprelu with W_enc = W e^r,
    b_enc = b_mag and threshold b_mag - e^r b_gate (the gate condition, rewritten on the magnitude pre-activation)."""
    scale = t["r_mag"].exp()
    return {"W_enc": t["W_enc"] * scale, "b_enc": t["b_mag"], **_log_threshold({"threshold": t["b_mag"] - scale * t["b_gate"]}, path)}


def _uniform_threshold(t, path):
    th = t["threshold"]
    if not (th == th[0]).all():
        raise ValueError(f"{path}: threshold differs across latents, but metadata.interp says batchtopk (one global threshold).")
    return {"threshold": th[0].clone()}


READ_EXTRA = {  # (SAELens arch, our arch) -> our extra tensors
    ("jumprelu", "jumprelu"): _log_threshold,
    ("jumprelu", "batchtopk"): _uniform_threshold,
    ("jumprelu", "matryoshka"): _uniform_threshold,
    ("batchtopk", "batchtopk"): lambda t, path: {"threshold": t["topk_threshold"]},
    ("gated", "jumprelu"): _gated,
    ("skip_transcoder", "relu"): lambda t, path: {"W_skip": t["W_skip"].T},
    ("jumprelu_transcoder", "jumprelu"): _log_threshold,
    ("jumprelu_skip_transcoder", "jumprelu"): lambda t, path: {**_log_threshold(t, path), "W_skip": t["W_skip"].T},
    ("jumprelu_transcoder", "batchtopk"): _uniform_threshold,
    ("jumprelu_transcoder", "matryoshka"): _uniform_threshold,
}
EXTRA_SHAPES = {"jumprelu": lambda c: {"threshold": (c.d_dict,)}, "batchtopk": lambda c: {"topk_threshold": ()},
                "jumprelu_transcoder": lambda c: {"threshold": (c.d_dict,)}, "skip_transcoder": lambda c: {"W_skip": (c.d_out, c.d_in)},
                "jumprelu_skip_transcoder": lambda c: {"threshold": (c.d_dict,), "W_skip": (c.d_out, c.d_in)},
                "gated": lambda c: {"b_gate": (c.d_dict,), "b_mag": (c.d_dict,), "r_mag": (c.d_dict,)}}


# --- writing -----------------------------------------------------------------
def save_saelens(dictionary: Dictionary, folder: str | Path) -> Path:
    """Write `dictionary` as SAELens would save it; pass `d.exported(...)` if it was trained on scaled inputs."""
    cfg = dictionary.cfg
    saelens_architecture(cfg)  # fails before anything is written if SAELens has no layout for it
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {**{n: getattr(dictionary, n) for n in BASE}, **WRITE_EXTRA.get(cfg.arch, lambda d: {})(dictionary)}
    if cfg.skip:
        tensors["W_skip"] = dictionary.W_skip.T  # SAELens applies x @ W_skip.T
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
    tmp.replace(folder / WEIGHTS_FILE)
    write_atomic_text(folder / CFG_FILE, json.dumps(saelens_config(cfg), indent=2))
    return folder


def is_transcoder(cfg: DictionaryConfig) -> bool:
    return cfg.hook_out != cfg.hook_in or cfg.d_out != cfg.d_in or cfg.skip


def saelens_architecture(cfg: DictionaryConfig) -> str:
    """SAELens's architecture name for `cfg`, or a ValueError saying why SAELens has none."""
    table = TRANSCODERS if is_transcoder(cfg) else WRITE
    kind = "transcoder" if is_transcoder(cfg) else "SAE"
    if cfg.arch not in table:
        raise ValueError(f"SAELens has no {kind} layout for architecture {cfg.arch!r}; supported: {sorted(table)}.")
    if is_transcoder(cfg) and cfg.subtract_b_dec:
        raise ValueError("SAELens transcoders never subtract b_dec from their input (apply_b_dec_to_input=False); "
                         "this transcoder has subtract_b_dec=True.")
    if cfg.skip and cfg.arch != "relu" and cfg.arch != "jumprelu":
        raise ValueError(f"SAELens's skip transcoders are ReLU or JumpReLU; this skip transcoder is {cfg.arch!r}.")
    return SKIP.get(cfg.arch, "") if cfg.skip else table[cfg.arch]


def saelens_config(cfg: DictionaryConfig) -> dict:
    """The cfg.json contents, in SAELens's field order."""
    theirs = saelens_architecture(cfg)
    meta = {"sae_lens_version": LAYOUT_VERSION, "sae_lens_training_version": None,
            "model_name": cfg.model or None, "hook_name": cfg.hook_in or None, "hook_head_index": None,
            **({"hook_name_out": cfg.hook_out or None} if is_transcoder(cfg) else {}),
            "prepend_bos": True,  # our contexts start with BOS (interp.data.tokens)
            **{key: cfg.training.get(ours) for key, ours in META_TO_TRAINING.items()}, "interp": to_dict(cfg)}
    out = {"d_in": cfg.d_in, "d_sae": cfg.d_dict, "dtype": cfg.dtype, "device": "cpu",
           "apply_b_dec_to_input": cfg.subtract_b_dec, "normalize_activations": "none",
           "reshape_activations": "none", "metadata": meta}
    topk = {"k": cfg.k, "rescale_acts_by_decoder_norm": False} if theirs == "topk" else {}
    d_out = {"d_out": cfg.d_out} if is_transcoder(cfg) else {}
    return {**out, **topk, **d_out, "architecture": theirs}


# --- reading -----------------------------------------------------------------
def load_saelens(folder: str | Path, device: str = "cpu", norm_scaling_factor: float | None = None) -> Dictionary:
    """Load a SAELens SAE folder (6.x or the older flat cfg) as our Dictionary; fails clearly on what it cannot honour.

    `norm_scaling_factor`: for normalize_activations "expected_average_only_in" (SAELens keeps the
    factor outside cfg.json, in its pretrained-SAE directory); it is folded into the weights.
    """
    folder = Path(folder)
    path = folder / CFG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {folder} a SAELens SAE folder?")
    top, meta = _layout(load_json(path), path)
    theirs = _field(top, "architecture", str, path)
    if theirs not in READ:
        raise ValueError(f"{path}: field 'architecture' is {theirs!r}; supported: {sorted(READ)}.")
    _check_options(top, meta, path, norm_scaling_factor)
    cfg = _our_config(top, meta, theirs, path)
    model = architecture(cfg.arch)(cfg)
    model.load_state_dict(_read_tensors(folder / WEIGHTS_FILE, top, theirs, cfg))
    if top.get("rescale_acts_by_decoder_norm"):  # topk ran on pre * ||W_dec_i||: fold it into the latents
        model.fold_decoder_norms()
    if norm_scaling_factor is not None:
        model.fold_scales(norm_scaling_factor, norm_scaling_factor)
    return model.to(device)


def _layout(raw, path: Path) -> tuple[dict, dict]:
    """(top-level fields, metadata), turning a pre-6.0 flat cfg into the 6.x shape."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}.")
    if "metadata" in raw:
        return {"apply_b_dec_to_input": True, **raw}, _field(raw, "metadata", dict, path)
    top = {"architecture": "standard", "apply_b_dec_to_input": True, **{FLAT_RENAMES.get(k, k): v for k, v in raw.items()}}
    if top.get("activation_fn") == "topk":
        top["architecture"] = "topk"
        top.setdefault("k", (top.get("activation_fn_kwargs") or {}).get("k"))
    norm = top.get("normalize_activations")
    if norm is None or isinstance(norm, bool):
        top["normalize_activations"] = "expected_average_only_in" if norm else "none"
    return top, {k: top[k] for k in FLAT_META if k in top}


def _check_options(top: dict, meta: dict, path: Path, factor: float | None) -> None:
    for name, allowed in CHOICES.items():
        if top.get(name, allowed[0]) not in allowed:
            raise ValueError(f"{path}: field {name!r} is {top[name]!r}; interp can only honour {list(allowed)}.")
    if meta.get("hook_head_index") is not None:
        raise ValueError(f"{path}: field 'metadata.hook_head_index' is {meta['hook_head_index']}; "
                         "interp dictionaries read a whole hook, not one head.")
    norm = top.get("normalize_activations", "none")
    if norm == "expected_average_only_in":
        if factor is None or factor <= 0:
            raise ValueError(f"{path}: field 'normalize_activations' is 'expected_average_only_in', which needs a positive "
                             f"norm_scaling_factor (not stored in cfg.json); got {factor}.")
    elif norm != "none":
        raise ValueError(f"{path}: field 'normalize_activations' is {norm!r}, a per-input normalisation interp cannot honour.")
    elif factor is not None:
        raise ValueError(f"{path}: norm_scaling_factor given, but field 'normalize_activations' is 'none'.")


def _our_config(top: dict, meta: dict, theirs: str, path: Path) -> DictionaryConfig:
    d_in, d_sae = _field(top, "d_in", int, path), _field(top, "d_sae", int, path)
    block = meta.get("interp") or {}
    if not isinstance(block, dict):
        raise ValueError(f"{path}: field 'metadata.interp' should be an object, got {block!r}.")
    mine = block.get("arch")
    written = (WRITE.get(mine), TRANSCODERS.get(mine), SKIP.get(mine))
    ours = mine if theirs in written else READ[theirs]
    hook = meta.get("hook_name") or ""
    d_out = _field(top, "d_out", int, path) if "transcoder" in theirs else d_in
    owned = {"arch": ours, "d_in": d_in, "d_dict": d_sae, "d_out": d_out, "hook_in": hook,
             "hook_out": meta.get("hook_name_out") or hook, "skip": theirs in SKIP.values(),
             "model": meta.get("model_name") or "", "dtype": str(top.get("dtype", "float32")).removeprefix("torch."),
             "subtract_b_dec": _field(top, "apply_b_dec_to_input", bool, path)}
    if theirs in ("topk", "batchtopk"):
        k = _field(top, "k", (int, float), path)
        if k != int(k):
            raise ValueError(f"{path}: field 'k' is {k}; interp needs a whole number of latents.")
        owned["k"] = int(k)
    training = {ours_key: meta[key] for key, ours_key in META_TO_TRAINING.items() if meta.get(key) is not None}
    data = {**PLACEHOLDERS.get(ours, {}), "training": training, **block, **owned}
    return from_dict(DictionaryConfig, data, source=f"{path} (with metadata.interp)")


def _read_tensors(path: Path, top: dict, theirs: str, cfg: DictionaryConfig) -> dict[str, torch.Tensor]:
    d_in, d_sae, d_out = cfg.d_in, cfg.d_dict, cfg.d_out
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_out), "b_dec": (d_out,)}
    if theirs == "gated":
        del shapes["b_enc"]
    shapes.update(EXTRA_SHAPES.get(theirs, lambda c: {})(cfg))
    if "scaling_factor" in _tensor_names(path):  # pre-6.0 files: decode multiplies codes by it
        shapes["scaling_factor"] = (d_sae,)
    dtype = getattr(torch, cfg.dtype)
    t = read_weights(path, {n: torch.empty(s, dtype=dtype, device="meta") for n, s in shapes.items()})
    if "scaling_factor" in t:
        scale = t.pop("scaling_factor")
        if not top.get("finetuning_scaling_factor") and not torch.all(scale == 1):
            raise ValueError(f"{path}: tensor scaling_factor is not all ones but field 'finetuning_scaling_factor' is false.")
        t["W_dec"] = t["W_dec"] * scale[:, None]
    extra = READ_EXTRA.get((theirs, cfg.arch), lambda t, path: {})(t, path)
    return {**{n: t[n] for n in BASE if n in t}, **extra}


def _tensor_names(path: Path) -> set[str]:
    try:
        with safe_open(path, framework="pt") as f:
            return set(f.keys())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found.") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or foreign?): {err}") from None


def _field(data: dict, name: str, kind, path: Path):
    if name not in data or data[name] is None:
        raise ValueError(f"{path}: missing field {name!r}.")
    value = data[name]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise ValueError(f"{path}: field {name!r} should be {getattr(kind, '__name__', kind)}, got {value!r}.")
    return value


# --- the load_dictionary table (interp.io.load) ---------------------------------
NAME = "saelens"
FILES = (CFG_FILE, WEIGHTS_FILE)


def claims(folder: Path) -> bool:
    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def read(folder: Path, hook_in: str = "", hook_out: str = "", model: str = "", **_) -> Dictionary:
    from interp.io.build import override

    return override(load_saelens(folder), hook_in, hook_out, model)
