"""Interventions on transcoder features in a prompt's local replacement model
(`interp.circuits.replacement.LocalReplacement`): every MLP is its transcoder plus the error term
recorded on the prompt, and

- attention="frozen" holds attention patterns and norm scales at their values on the prompt (the graph's
  own linear world), "recomputed" lets them respond to the change (the real model's attention and norms);
- downstream="free" re-encodes every transcoder from its changed input (features respond), "held" keeps every
  MLP output at its value on the prompt except for the intervened features' own change.
Features of cross-layer transcoders write their change into every MLP output they decode to (`rep.decoders`).

With attention frozen and downstream held, ablating a feature changes each logit by exactly that feature's
direct effect, the edge of the attribution graph. With no intervention every mode gives the model's logits.
"""

from __future__ import annotations

import torch

from interp.interventions.spec import Intervention, edit_codes

ATTENTION = ("frozen", "recomputed")
DOWNSTREAM = ("free", "held")


@torch.no_grad()
def replacement_logits(rep, interventions: list[Intervention] | list[list[Intervention]], attention: str = "frozen",
                       downstream: str = "free") -> torch.Tensor:
    """Logits [batch, n_pos, d_vocab] of `rep` with its transcoders' features changed: a list of interventions
    (batch 1) or a list of lists (one batch row each; a batch costs one forward pass)."""
    if attention not in ATTENTION or downstream not in DOWNSTREAM:
        raise ValueError(f"attention must be one of {ATTENTION} and downstream one of {DOWNSTREAM}; "
                         f"got {attention!r} and {downstream!r}.")
    rows = [interventions] if not interventions or isinstance(interventions[0], Intervention) else interventions
    layer_of = {id(tc): layer for layer, tc in rep.transcoders.items()}
    for iv in (iv for row in rows for iv in row):
        if id(iv.dictionary) not in layer_of:
            raise ValueError(f"An intervention on {iv.dictionary.cfg.hook_out} uses a dictionary that is not one of "
                             "this replacement's transcoders; build it with rep.transcoders[layer].")
    hooks = []
    if attention == "frozen":
        frozen = lambda act, hook: rep.cache[hook.name].expand_as(act)
        hooks += [(name, frozen) for name in rep.cache if name.endswith(("hook_scale", "hook_pattern"))]
    state: dict = {}
    for layer in range(rep.n_layers):
        layer_rows = [[iv for iv in row if layer_of[id(iv.dictionary)] == layer] for row in rows]
        hooks += _mlp_hooks(rep, layer, edit_codes(layer_rows, rep.n_pos), downstream, state)
    return rep.model.run_with_hooks(rep.tokens.expand(len(rows), -1), fwd_hooks=hooks)


def _mlp_hooks(rep, layer: int, edit, downstream: str, state: dict):
    """Hooks making MLP `layer` output its transcoder's (changed) features plus the recorded error; the features
    of earlier layers that write here too (cross-layer transcoders, `rep.decoders`) add theirs. `state[layer]`
    keeps (codes, changed codes) [batch, n_pos, d_dict] of every layer run so far."""
    tc, mask = rep.transcoders[layer], rep.feature_positions[:, None]

    def read(act, hook):
        state["x"] = act
        return act

    def write(act, hook):
        if downstream == "held":
            old = rep.codes[layer].expand(len(act), -1, -1)
        else:
            x = state.pop("x")
            old = tc.encode(x.to(tc.W_enc.dtype)).float() * mask
        state[layer] = (old, edit(old) * mask)
        writes = [(state[s], rep.decoders(s)[layer]) for s in range(layer + 1) if s in state and layer in rep.decoders(s)]
        change = sum((new - old) @ W for (old, new), W in writes)
        if downstream == "held":
            return rep.cache[hook.name].to(act.dtype) + change.to(act.dtype)
        out = tc.b_dec.float() + sum(old @ W for (old, _), W in writes) + change + rep.errors[layer]
        if tc.cfg.skip:
            out = out + (x.to(tc.W_enc.dtype) @ tc.W_skip).float()
        return out.to(act.dtype)

    name = f"blocks.{layer}.hook_mlp_out"
    return [(name, write)] if downstream == "held" else [(f"blocks.{layer}.ln2.hook_normalized", read), (name, write)]
