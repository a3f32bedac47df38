"""Activations together with the gradient of the model's loss with respect to
them, from one forward and one backward pass of the frozen model.

The loss is the next-token cross-entropy summed over positions whose target is
not BOS, so the gradient at position t measures x_t's effect on every later
prediction (what splicing a dictionary in at t changes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from interp.data.tokens import token_mask

def next_token_loss(model, tokens: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of predicting tokens[:, 1:], BOS targets excluded ([b, pos] tokens -> scalar)."""
    keep = token_mask(model, tokens[:, 1:])
    return F.cross_entropy(logits[:, :-1][keep].float(), tokens[:, 1:][keep], reduction="sum")


def activations_and_gradients(model, tokens: torch.Tensor, hooks: list[str], grad_hooks: list[str]) -> dict[str, torch.Tensor]:
    """{hook: activation} for `hooks` and {"grad:" + hook: d loss / d activation} for `grad_hooks`."""
    stash: dict[str, torch.Tensor] = {}
    order = list(model.hook_dict)  # registration order follows the forward pass
    leaf = min(grad_hooks, key=order.index) if grad_hooks else None

    def keep(act, hook):
        if hook.name == leaf:  # the weights are frozen: the graph starts here, backward stops here
            act = act.detach().requires_grad_(True)
        stash[hook.name] = act
        return act

    fwd_hooks = [(n, keep) for n in sorted(set(hooks) | set(grad_hooks))]
    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks)
        loss = next_token_loss(model, tokens, logits)
        grads = torch.autograd.grad(loss, [stash[n] for n in grad_hooks]) if grad_hooks else []
    out = {n: stash[n].detach() for n in hooks}
    out.update({f"grad:{n}": g for n, g in zip(grad_hooks, grads)})
    return out
