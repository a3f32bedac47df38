"""What every reader shares: turning named tensors in our layout into a checked `Dictionary`, reading
weight files safely, and mapping Hugging Face module paths to TransformerLens hook names.

Our layout: W_enc [d_in, d_dict], b_enc [d_dict], W_dec [d_dict, d_out], b_dec [d_out],
W_skip [d_in, d_out] (skip transcoders), plus `threshold` [d_dict] (JumpReLU, stored by us as
log_threshold) or a scalar `threshold` (BatchTopK). Readers transpose and rename into this layout;
`build` checks every shape against W_enc/W_dec (and against the dimensions the source's config
declares) before anything is loaded, so a bad file never yields a half-loaded dictionary.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from interp.dictionary import Dictionary, DictionaryConfig, architecture

# Training-only coefficients that our architectures require but no published file records.
PLACEHOLDERS = {"relu": {"l1_coeff": 1.0}, "jumprelu": {"l0_coeff": 1.0}}
DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def build(arch: str, tensors: dict[str, torch.Tensor], where: str, declared: dict[str, int] | None = None,
          **fields) -> Dictionary:
    """A `Dictionary` of architecture `arch` holding `tensors` (our layout, see the module docstring).

    `declared`: dimensions the source's config states (d_in, d_dict, d_out), checked against the tensors.
    `fields`: the rest of the DictionaryConfig (hook_in, hook_out, model, k, subtract_b_dec, ...)."""
    for name in ("W_enc", "W_dec"):
        if name not in tensors:
            raise ValueError(f"{where}: no {name} tensor (found {sorted(tensors)}); not a dictionary of the expected format.")
        if tensors[name].dim() != 2:
            raise ValueError(f"{where}: {name} should be a matrix, got shape {tuple(tensors[name].shape)}.")
    (d_in, d_dict), d_out = tensors["W_enc"].shape, tensors["W_dec"].shape[1]
    for key, value in (declared or {}).items():
        actual = {"d_in": d_in, "d_dict": d_dict, "d_out": d_out}[key]
        if value != actual:
            raise ValueError(f"{where}: the config says {key}={value} but the weights have {key}={actual} "
                             f"(W_enc {tuple(tensors['W_enc'].shape)}, W_dec {tuple(tensors['W_dec'].shape)}).")
    dtype = fields.pop("dtype", None) or DTYPES.get(tensors["W_enc"].dtype, "float32")
    cfg = DictionaryConfig(arch=arch, d_in=d_in, d_dict=d_dict, d_out=d_out, dtype=dtype,
                           **{**PLACEHOLDERS.get(arch, {}), **fields})
    model = architecture(arch)(cfg)
    state = _state(arch, tensors)
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"{where}: tensors do not match a {arch} dictionary (missing {missing}, unexpected {extra}).")
    for name, ref in expected.items():
        if state[name].shape != ref.shape:
            raise ValueError(f"{where}: {name} has shape {tuple(state[name].shape)}, expected {tuple(ref.shape)} "
                             f"(d_in={d_in}, d_dict={d_dict}, d_out={d_out}).")
        if not torch.isfinite(state[name].float()).all():
            raise ValueError(f"{where}: {name} contains NaN or inf.")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model


def override(d: Dictionary, hook_in: str = "", hook_out: str = "", model: str = "") -> Dictionary:
    """`d` with the caller's hook names / model replacing what its files said (an SAE's hook_out follows hook_in)."""
    if hook_in and not hook_out and d.cfg.hook_in == d.cfg.hook_out:
        hook_out = hook_in
    changes = {k: v for k, v in (("hook_in", hook_in), ("hook_out", hook_out), ("model", model)) if v}
    if changes:
        d.cfg = d.cfg.replace(**changes)
    return d


def _state(arch: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = {k: v.detach().contiguous() for k, v in tensors.items()}
    if arch == "jumprelu" and "threshold" in state:  # we store log thresholds; a gate at t <= 0 is a gate at +0
        t = state.pop("threshold")
        state["log_threshold"] = t.clamp_min(torch.finfo(t.dtype).tiny).log()
    return state


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, failing clearly on a missing, truncated or foreign file."""
    try:
        return load_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found.") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or foreign?): {err}") from None


def read_torch_state(path: Path) -> dict[str, torch.Tensor]:
    """A torch state dict read with weights_only=True (never arbitrary unpickling)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(f"{path} cannot be read as plain tensors with torch.load(weights_only=True); it is truncated, "
                         f"not a torch file, or needs arbitrary unpickling, which interp refuses ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}). Re-save it as a state dict of tensors.") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}.")
    return state


# --- hook names ----------------------------------------------------------------------------------------
_MODULE = re.compile(r"^(?:[\w.]*\.)?(?:layers|h|blocks)\.(\d+)(?:\.(mlp|self_attn|attn|attention))?$")
SAE_HOOKS = {None: "blocks.{L}.hook_resid_post", "mlp": "blocks.{L}.hook_mlp_out", "attn": "blocks.{L}.hook_attn_out"}
TRANSCODER_HOOKS = {None: ("blocks.{L}.hook_resid_pre", "blocks.{L}.hook_resid_post"),
                    "mlp": ("blocks.{L}.ln2.hook_normalized", "blocks.{L}.hook_mlp_out")}


def module_hooks(module: str, transcoder: bool) -> tuple[str, str]:
    """(hook_in, hook_out) in TransformerLens names for a dictionary trained on the output of the Hugging Face
    module `module` ("layers.6", "gpt_neox.layers.6.mlp", "transformer.h.3", ...); ("", "") if unknown.

    A transcoder on a module reads that module's input and predicts its output."""
    match = _MODULE.match(module)
    if match is None:
        return "", ""
    layer, part = match.group(1), match.group(2)
    part = "attn" if part in ("self_attn", "attention", "attn") else part
    if transcoder:
        pair = TRANSCODER_HOOKS.get(part)
        return (pair[0].format(L=layer), pair[1].format(L=layer)) if pair else ("", "")
    hook = SAE_HOOKS[part].format(L=layer)
    return hook, hook
