"""Steering effect of dictionary latents: how much the model's next-token
distribution moves when a latent's decoder direction is added to the stream.

For latent i, scale * mean||x|| * d_i / ||d_i|| is added at every non-BOS
position of the dictionary's output hook; the effect is KL(clean || steered)
averaged over next-token predictions. A latent that is used by the model
(rather than merely reconstructing variance) should move the output more.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from interp.data.tokens import token_mask
from interp.dictionary import Dictionary


@torch.no_grad()
def steering_effects(model, dictionary: Dictionary, tokens: torch.Tensor, latents: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """KL(clean || steered) per latent: tokens [n, n_ctx], latents [m] (indices) -> [m]."""
    hook = dictionary.cfg.hook_out
    mask = token_mask(model, tokens)
    clean, cache = model.run_with_cache(tokens, names_filter=[hook])
    acts = cache[hook].reshape(*tokens.shape, -1)
    norm = acts[mask].norm(dim=-1).mean()
    clean_logp = clean[:, :-1].log_softmax(-1)
    directions = dictionary.W_dec[latents] / dictionary.W_dec[latents].norm(dim=-1, keepdim=True)
    out = torch.empty(len(latents))
    for j, direction in enumerate(tqdm(directions, desc="steering", leave=False)):
        push = (scale * norm * direction).to(acts.dtype)

        def add(act, hook):
            flat = act.reshape(*tokens.shape, -1)
            return torch.where(mask[..., None], flat + push, flat).reshape(act.shape)

        steered = model.run_with_hooks(tokens, fwd_hooks=[(hook, add)])[:, :-1].log_softmax(-1)
        kl = (clean_logp.exp() * (clean_logp - steered)).sum(-1)
        out[j] = kl[mask[:, :-1]].mean()
    return out


def alive_latents(density: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Up to n latents that fired at least once, chosen at random (density [d_dict])."""
    alive = (density > 0).nonzero().squeeze(-1)
    g = torch.Generator().manual_seed(seed)
    return alive[torch.randperm(len(alive), generator=g)[:n]].sort().values
