"""Transcoder circuit analysis (Dunefsky et al., "Transcoders Find Interpretable
LLM Feature Circuits", 2024): the attribution of an earlier feature i to a later
feature j factorises into an input-dependent and an input-invariant term.

With attention patterns A and norm scales s frozen on the prompt, feature i
(layer l, source position p, activation a_i) reaches feature j (layer L > l,
position t) directly through the residual stream and through each attention
head h of the layers m in (l, L] (one hop):

  residual:  [p == t] * a_i / s2[L, t]                      * (d_i . e_j)
  head h:    a_i * A_h[t, p] / (s1[m, p] * s2[L, t])         * (d_i w1_m) W_V[h] W_O[h] . e_j

where d_i is i's decoder row, e_j j's encoder column (both centred over
d_model for LayerNorm, which subtracts the mean), w1_m layer m's first norm weight. The
second factors are input-invariant (`connections`, `head_connections`); the
first are what a prompt supplies. Paths through several heads are in the
attribution graph's edges, which these terms sum to when L = l + 1.

`de_embedding` ranks vocabulary tokens by their direct input-invariant
connection to a feature; `logit_effects` ranks the tokens a feature's decoder
direction promotes and suppresses directly (final norm's scale left out: it
rescales, it does not reorder).
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

from interp.dictionary import Dictionary


def _is_layernorm(model: HookedTransformer) -> bool:
    return model.cfg.normalization_type in ("LN", "LNPre")


def _centre(model: HookedTransformer, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm subtracts the mean over d_model; RMSNorm does not."""
    return x - x.mean(-1, keepdim=True) if _is_layernorm(model) else x


def _norm_weight(module) -> torch.Tensor | float:
    return module.w if hasattr(module, "w") else 1.0


def _rows(model: HookedTransformer, dictionary: Dictionary, latents) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoder rows [n, d_model], encoder columns [d_model, n]) of `latents` (all if None), both centred for
    LayerNorm: what a norm reads of a direction is its centred part."""
    idx = slice(None) if latents is None else torch.as_tensor(latents).reshape(-1)
    return _centre(model, dictionary.W_dec[idx].float()), _centre(model, dictionary.W_enc[:, idx].float().T).T


def connections(model: HookedTransformer, upstream: Dictionary, downstream: Dictionary, up_latents=None,
                down_latents=None) -> torch.Tensor:
    """[n_up, n_down] input-invariant residual-path connections d_i . e_j (all latents unless given)."""
    return _rows(model, upstream, up_latents)[0] @ _rows(model, downstream, down_latents)[1]


def head_connections(model: HookedTransformer, upstream: Dictionary, downstream: Dictionary, layer: int,
                     up_latents=None, down_latents=None) -> torch.Tensor:
    """[n_heads, n_up, n_down] input-invariant connections through each head of `layer`'s OV circuit."""
    block = model.blocks[layer]
    d = _rows(model, upstream, up_latents)[0] * _norm_weight(block.ln1)
    W_V = block.attn.W_V if block.attn.W_V.shape[0] == model.cfg.n_heads else \
        torch.repeat_interleave(block.attn.W_V, model.cfg.n_heads // block.attn.W_V.shape[0], 0)
    ov = torch.einsum("fd,hde,hem->hfm", d, W_V.float(), block.attn.W_O.float())
    return ov @ _rows(model, downstream, down_latents)[1]


def de_embedding(model: HookedTransformer, dictionary: Dictionary, latent: int, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [k], token ids [k]): the tokens whose embeddings most excite `latent` directly."""
    scores = _centre(model, model.W_E.float()) @ dictionary.W_enc[:, latent].float()
    return scores.topk(k)


def logit_effects(model: HookedTransformer, dictionary: Dictionary, latents: torch.Tensor) -> torch.Tensor:
    """[len(latents), d_vocab] direct effect of each decoder direction on the logits (up to the final scale)."""
    d = _centre(model, dictionary.W_dec[latents].float()) * _norm_weight(model.ln_final)
    effects = d @ model.W_U.float()
    return effects - effects.mean(-1, keepdim=True)


def factorized_attribution(model: HookedTransformer, replacement, up: tuple[int, int, int],
                           down: tuple[int, int, int]) -> dict[str, float]:
    """The one-hop attribution of feature `up` (layer, position, latent) to `down` (layer, position, latent)
    on `replacement`'s prompt as {"residual": ..., "heads": [...per head of the layers between...]}:
    input-dependent factors (activations, frozen patterns and scales) times the invariant ones."""
    (l, p, i), (L, t, j) = up, down
    if L <= l or p > t:
        raise ValueError(f"Feature {up} cannot reach {down}: it must be in an earlier layer and not a later position.")
    a = replacement.codes[l][p, i].item()
    s2 = replacement.cache[f"blocks.{L}.ln2.hook_scale"][0, t, 0].item()
    tc_up, tc_down = replacement.transcoders[l], replacement.transcoders[L]
    residual = a / s2 * connections(model, tc_up, tc_down, i, j).item() if p == t else 0.0
    heads = []
    for m in range(l + 1, L + 1):
        pattern = replacement.cache[f"blocks.{m}.attn.hook_pattern"][0, :, t, p]
        s1 = replacement.cache[f"blocks.{m}.ln1.hook_scale"][0, p, 0].item()
        invariant = head_connections(model, tc_up, tc_down, m, i, j)[:, 0, 0]
        heads.append((a * pattern / (s1 * s2) * invariant).tolist())
    return {"residual": residual, "heads": heads}
