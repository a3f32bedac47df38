"""Direct feature attribution for attention-output SAEs (Kissane et al., 2024).

An SAE on `blocks.L.attn.hook_z` reads the heads' outputs concatenated,
z [n_heads * d_head]. A latent's pre-activation is linear in z, so it splits
exactly into one term per head, and (through z_h[t] = sum_s A_h[t, s] v_h[s])
one term per head and source position:

  pre_i[t] = b_enc_i + sum_h (z_h[t] - b_dec_h) . W_enc[h, :, i]
           = b_enc_i - b_dec . W_enc[:, i] + sum_{h, s} A_h[t, s] v_h[s] . W_enc[h, :, i]
"""

from __future__ import annotations

import einops
import torch

from interp.dictionary import Dictionary


def head_attribution(dictionary: Dictionary, z: torch.Tensor, latent: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-head contributions [batch, n_heads], bias [1]) to `latent`'s pre-activation; z [batch, n_heads, d_head].

    contributions.sum(-1) + bias equals dictionary.pre_acts(z.flatten(1))[:, latent].
    """
    n_heads = z.shape[1]
    w = einops.rearrange(dictionary.W_enc[:, latent], "(h d) -> h d", h=n_heads)
    contributions = torch.einsum("bhd,hd->bh", z.to(w.dtype), w)
    bias = dictionary.b_enc[latent]
    if dictionary.cfg.subtract_b_dec:
        bias = bias - dictionary.b_dec @ dictionary.W_enc[:, latent]
    return contributions, bias.reshape(1)


def source_attribution(pattern: torch.Tensor, v: torch.Tensor, dictionary: Dictionary, latent: int,
                       position: int) -> torch.Tensor:
    """Contributions [n_heads, n_source] of each (head, source position) to `latent` at query `position`.

    pattern [n_heads, q, k] and v [k, n_kv_heads, d_head] of one sequence (grouped key/value heads are
    repeated to the query heads, as the model does). Summed and added to the bias of `head_attribution`,
    they give the latent's pre-activation.
    """
    n_heads = pattern.shape[0]
    v = torch.repeat_interleave(v, n_heads // v.shape[1], dim=1)
    w = einops.rearrange(dictionary.W_enc[:, latent], "(h d) -> h d", h=n_heads)
    return pattern[:, position, :].to(w.dtype) * torch.einsum("khd,hd->hk", v.to(w.dtype), w)


def top_heads(dictionary: Dictionary, z: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """For each latent, the head with the largest mean |contribution| on the tokens where it fires: [len(latents)]."""
    codes = dictionary.encode(z.flatten(1).to(dictionary.W_enc.dtype))
    out = torch.empty(len(latents), dtype=torch.long)
    for j, latent in enumerate(latents.tolist()):
        active = codes[:, latent] > 0
        contributions, _ = head_attribution(dictionary, z[active] if active.any() else z, latent)
        out[j] = contributions.abs().mean(0).argmax()
    return out
