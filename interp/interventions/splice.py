"""Running a model with interventions on dictionary latents, through TransformerLens hooks.

Each dictionary reads its `hook_in` and writes its `hook_out` (the same hook for SAEs; the MLP's input and
output for transcoders; `blocks.L.attn.hook_z`, heads flattened, for attention-output SAEs). At `hook_out`
the codes of the input are changed and, by default, only the change is written:

    output = model's activation + decode(changed codes) - decode(codes)

so the dictionary's error term stays in the forward pass and an intervention of zero strength gives the
model's own logits exactly. `keep_error=False` splices the reconstruction alone (decode(changed) + skip),
which with no change equals `interp.hooks.splice_hooks`. A cross-layer transcoder's per-layer view
(with `W_dec_cross`) also writes the change into the later layers' MLP outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import torch

from interp.dictionary import Dictionary
from interp.interventions.spec import Intervention, edit_codes
from interp.model import hook_layer, validate_hook


def dictionary_hooks(model, dictionary: Dictionary, edit: Callable[[torch.Tensor], torch.Tensor],
                     keep_error: bool = True, record: dict | None = None) -> list[tuple[str, Callable]]:
    """fwd_hooks splicing `dictionary` with its codes [batch, pos, d_dict] changed by `edit`;
    `record[hook_out]` receives the changed codes."""
    cfg = dictionary.cfg
    for name in {cfg.hook_in, cfg.hook_out}:
        validate_hook(model, name)
    stash: dict[str, torch.Tensor] = {}

    def read(act, hook):
        stash["x"] = _flat(act, cfg.d_in, hook.name, "reads")
        return act

    def write(act, hook):
        y = _flat(act, cfg.d_out, hook.name, "writes")
        x = stash.pop("x") if cfg.hook_in != cfg.hook_out else y
        x = x.to(dictionary.W_enc.dtype)
        codes = dictionary.encode(x.flatten(0, 1)).reshape(*x.shape[:2], -1)
        new = edit(codes)
        stash["change"] = new - codes
        if record is not None:
            record[cfg.hook_out] = new.detach()
        if keep_error:
            out = y + (stash["change"] @ dictionary.W_dec).to(act.dtype)
        else:
            out = dictionary.with_skip(dictionary.decode(new), x).to(act.dtype)
        return out.reshape(act.shape)

    hooks = [(cfg.hook_out, write), *_cross_layer_hooks(dictionary, stash, keep_error)]
    return hooks if cfg.hook_in == cfg.hook_out else [(cfg.hook_in, read), *hooks]


def _cross_layer_hooks(dictionary: Dictionary, stash: dict, keep_error: bool) -> list[tuple[str, Callable]]:
    """A cross-layer transcoder's view (`W_dec_cross` [d_dict, n_later, d_model]) also writes the change of its
    codes into the MLP outputs of the later layers."""
    cross = getattr(dictionary, "W_dec_cross", None)
    if cross is None or cross.shape[1] == 0:
        return []
    if not keep_error:
        raise ValueError("A cross-layer transcoder's reconstruction needs every layer's features; "
                         "intervene on it with keep_error=True.")
    layer = hook_layer(dictionary.cfg.hook_out)

    def add(act, hook, i):
        return act + (stash["change"] @ cross[:, i].to(stash["change"])).reshape(act.shape).to(act.dtype)

    return [(f"blocks.{layer + 1 + i}.hook_mlp_out", partial(add, i=i)) for i in range(cross.shape[1])]


def _flat(act: torch.Tensor, width: int, name: str, verb: str) -> torch.Tensor:
    flat = act.reshape(*act.shape[:2], -1)
    if flat.shape[-1] != width:
        raise ValueError(f"The dictionary {verb} {width} dimensions at {name}, but this model's activation there has "
                         f"{flat.shape[-1]}; use a dictionary trained on this model and hook.")
    return flat


def intervention_hooks(model, interventions: list[Intervention], keep_error: bool = True, record: dict | None = None,
                       prompt_len: int | None = None) -> list[tuple[str, Callable]]:
    """fwd_hooks for all `interventions` (several per dictionary apply in order; several dictionaries at once)."""
    groups: dict[int, list[Intervention]] = {}
    for iv in interventions:
        groups.setdefault(id(iv.dictionary), []).append(iv)
    writes = [ivs[0].dictionary.cfg.hook_out for ivs in groups.values()]
    if record is not None and len(set(writes)) < len(writes):
        raise ValueError(f"Two dictionaries write the same hook ({writes}); record their codes in separate runs.")
    return [hook for ivs in groups.values()
            for hook in dictionary_hooks(model, ivs[0].dictionary, edit_codes([ivs], prompt_len), keep_error, record)]


@contextmanager
def intervene(model, interventions: list[Intervention] | Intervention, keep_error: bool = True) -> Iterator[dict]:
    """`with intervene(model, [Intervention.add(sae, 7, 4.0)]) as codes: logits = model(tokens)`;
    `codes` maps each dictionary's hook_out to its codes [batch, pos, d_dict] after the change."""
    record: dict[str, torch.Tensor] = {}
    hooks = intervention_hooks(model, _as_list(interventions), keep_error, record)
    with model.hooks(fwd_hooks=hooks):
        yield record


@torch.no_grad()
def run_with_interventions(model, tokens: torch.Tensor | str, interventions: list[Intervention] | Intervention,
                           keep_error: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(logits [batch, pos, d_vocab], {hook_out: codes [batch, pos, d_dict] after the change}).
    `tokens` [batch, pos] or [pos], or a prompt (BOS is prepended)."""
    tokens = as_tokens(model, tokens)
    with intervene(model, interventions, keep_error) as codes:
        logits = model(tokens)
    return logits, codes


def as_tokens(model, tokens: torch.Tensor | str) -> torch.Tensor:
    """[batch, pos] token ids on the model's device, from ids or a prompt (BOS first)."""
    if isinstance(tokens, str):
        from interp.circuits.graph import prompt_tokens

        tokens = prompt_tokens(model, tokens)
    tokens = torch.as_tensor(tokens)
    return (tokens[None] if tokens.dim() == 1 else tokens).to(model.cfg.device)


def _as_list(interventions) -> list[Intervention]:
    return [interventions] if isinstance(interventions, Intervention) else list(interventions)
