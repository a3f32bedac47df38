"""Pairing a dictionary with a model: the hooks it reads and writes exist there, with the widths it expects."""

from __future__ import annotations

import warnings

import torch

from interp.dictionary import Dictionary
from interp.model import validate_hook

# hook-name suffix -> the width of that activation (flattened over heads) from the model's config
WIDTHS = {"hook_resid_pre": "d_model", "hook_resid_mid": "d_model", "hook_resid_post": "d_model",
          "hook_mlp_out": "d_model", "hook_attn_out": "d_model", "hook_normalized": "d_model", "hook_embed": "d_model",
          "hook_pos_embed": "d_model", "mlp.hook_out": "d_model", "mlp.hook_pre": "d_mlp", "mlp.hook_post": "d_mlp",
          "attn.hook_z": "heads", "attn.hook_result": "d_model"}


def hook_width(model, name: str) -> int:
    """The last-dimension width (heads flattened) of activation `name` on `model`."""
    cfg = model.cfg
    for suffix, what in WIDTHS.items():
        if name.endswith(suffix):
            return cfg.n_heads * cfg.d_head if what == "heads" else getattr(cfg, what)
    shapes = {}
    tokens = torch.zeros(1, 1, dtype=torch.long, device=cfg.device)
    model.run_with_hooks(tokens, fwd_hooks=[(name, lambda act, hook: shapes.update(s=act.shape))])
    return int(torch.Size(shapes["s"][2:]).numel())


def check_compatible(dictionary: Dictionary, model) -> None:
    """Raise ValueError naming the hooks and widths if `dictionary` cannot run on `model`; warn when the
    model it records differs from this model's name."""
    cfg = dictionary.cfg
    spec = getattr(model, "spec", "") or getattr(model.cfg, "model_name", "")
    for role, hook, width in (("reads", cfg.hook_in, cfg.d_in), ("writes", cfg.hook_out, cfg.d_out)):
        if not hook:
            raise ValueError(f"The dictionary records no hook it {role} (hook_in={cfg.hook_in!r}, hook_out={cfg.hook_out!r}); "
                             "pass hook_in= (and hook_out= for transcoders) to load_dictionary.")
        try:
            validate_hook(model, hook)
        except ValueError as err:
            raise ValueError(f"The dictionary {role} {hook!r}, which model {spec!r} does not have. {err}") from None
        have = hook_width(model, hook)
        if have != width:
            raise ValueError(f"The dictionary {role} {hook!r} with width {width}, but model {spec!r} has width {have} there "
                             f"(dictionary trained on {cfg.model or 'an unrecorded model'}); load the model it was trained on.")
    if cfg.model and spec and _short(cfg.model) != _short(spec):
        warnings.warn(f"The dictionary was trained on {cfg.model!r}; it runs on {spec!r} (widths and hooks match).",
                      stacklevel=2)


def _short(name: str) -> str:
    return name.rstrip("/").split("/")[-1].lower()
