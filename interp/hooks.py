"""Splicing dictionaries into a model's forward pass through TransformerLens hooks.

A splice replaces the activation at the dictionary's `hook_out` with its
reconstruction of the activation at `hook_in` (optionally plus the error term,
which leaves the forward pass unchanged but lets gradients and interventions
flow through the codes). BOS positions keep their original activation.
"""

from __future__ import annotations

import torch

from interp.dictionary import Dictionary


def _flat(act: torch.Tensor) -> torch.Tensor:
    return act.reshape(*act.shape[:2], -1)


def _width(act: torch.Tensor, expected: int, hook, role: str) -> torch.Tensor:
    flat = _flat(act)
    if flat.shape[-1] != expected:
        raise ValueError(f"The dictionary {role} {hook.name!r} with width {expected}, but the model's activation there has "
                         f"width {flat.shape[-1]}; it was made for another model (interp.io.check_compatible says more).")
    return flat


def splice_hooks(dictionary: Dictionary, mask: torch.Tensor | None = None, with_error: bool = False, model=None):
    """fwd_hooks for `model.run_with_hooks`; mask [batch, pos] is True where to splice. Given `model`, the pairing
    is checked up front (`interp.io.check_compatible`); widths are checked when the hooks run either way."""
    cfg = dictionary.cfg
    stash: dict[str, torch.Tensor] = {}
    if model is not None:
        from interp.io.compat import check_compatible

        check_compatible(dictionary, model)

    def read(act, hook):
        stash["x"] = _width(act, cfg.d_in, hook, "reads")
        return act

    def write(act, hook):
        x = stash["x"] if cfg.hook_in != cfg.hook_out else _width(act, cfg.d_in, hook, "reads")
        _width(act, cfg.d_out, hook, "writes")
        recon = dictionary(x.to(dictionary.W_enc.dtype)).to(act.dtype)
        if with_error:
            recon = recon + (_flat(act) - recon).detach()
        if mask is not None:
            recon = torch.where(mask[..., None], recon, _flat(act))
        return recon.reshape(act.shape)

    if cfg.hook_in == cfg.hook_out:
        return [(cfg.hook_out, write)]
    return [(cfg.hook_in, read), (cfg.hook_out, write)]


def replace_hooks(name: str, value_fn, mask: torch.Tensor | None = None):
    """fwd_hooks replacing the activation at `name` by value_fn(act) where mask is True."""

    def hook(act, hook):
        new = value_fn(act)
        if mask is not None:
            new = torch.where(mask.reshape(*mask.shape, *[1] * (act.dim() - 2)), new, act)
        return new

    return [(name, hook)]
