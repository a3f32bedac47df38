"""Training pieces every architecture shares: the reconstruction loss, AuxK for
dead latents, and the unit-norm decoder constraint."""

from __future__ import annotations

import torch


class _SquaredError(torch.autograd.Function):
    """sum((recon - target)^2) / tokens for recon and target of one shape [..., d]: two passes (a difference
    and a dot), and one for the backward, 2 (recon - target) / tokens; autograd's formula takes seven."""

    @staticmethod
    def forward(ctx, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = recon - target
        ctx.tokens = max(1, diff.numel() // diff.shape[-1]) if diff.dim() and diff.shape[-1] else 1
        ctx.save_for_backward(diff)
        flat = diff.reshape(-1)
        return torch.dot(flat, flat) / ctx.tokens

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (diff,) = ctx.saved_tensors
        g = diff * (grad * (2 / ctx.tokens))
        return g if ctx.needs_input_grad[0] else None, -g if ctx.needs_input_grad[1] else None


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over dimensions, averaged over tokens ([batch, d] -> scalar)."""
    if recon.shape != target.shape or recon.dtype != target.dtype:
        return (recon - target).pow(2).sum(-1).mean()
    return _SquaredError.apply(recon, target)


def auxk_loss(pre_dead: torch.Tensor, W_dec_dead: torch.Tensor, residual: torch.Tensor, k_aux: int) -> torch.Tensor:
    """AuxK (Gao et al. 2024, appendix A.2): reconstruct the residual with the top
    `k_aux` dead latents, normalised by the residual's variance.

    pre_dead [batch, n_dead] (pre-activations of the dead latents only), W_dec_dead [n_dead, d_out],
    residual = target - recon [batch, d_out].
    """
    k = min(k_aux, pre_dead.shape[1])
    values, indices = pre_dead.topk(k, dim=-1, sorted=False)
    codes = torch.zeros_like(pre_dead).scatter_(-1, indices, torch.relu(values))
    residual = residual.detach()
    error = (codes @ W_dec_dead - residual).pow(2).sum(-1).mean()
    scale = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    return torch.nan_to_num(error / scale, nan=0.0)


def dead_latent_auxk(d, since_fired: torch.Tensor, x: torch.Tensor, target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """AuxK of dictionary `d` on its latents silent for `d.cfg.dead_tokens` tokens (since_fired [d_dict]),
    modelling the residual target - recon; 0 when none are, or AuxK is off."""
    dead = (since_fired >= d.cfg.dead_tokens).nonzero().squeeze(-1).to(x.device)
    if not d.cfg.aux_k or len(dead) == 0:
        return x.new_zeros(())
    return auxk_loss(d.pre_acts(x, dead), d.W_dec[dead], target - recon.float(), d.cfg.aux_k)


@torch.no_grad()
def remove_parallel_grad(W_dec: torch.nn.Parameter) -> None:
    """Project out the gradient component along each (unit) decoder row, so Adam moves along the sphere:
    grad -= <grad, w> w per row, in two passes (a row-wise dot, then one fused update)."""
    if W_dec.grad is not None:
        W_dec.grad.addcmul_(torch.linalg.vecdot(W_dec.grad, W_dec).unsqueeze(-1), W_dec, value=-1)


@torch.no_grad()
def clip_grad_norm(grads: list[torch.Tensor | None], max_norm: float) -> None:
    """torch.nn.utils.clip_grad_norm_ (L2, one device and dtype) on these gradients, to the same bits, but
    without its pass over them when their norm is within max_norm (it multiplies them by 1.0 then)."""
    grads = [g for g in grads if g is not None]
    if not grads:
        return
    coef = max_norm / (torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) + 1e-6)
    if not coef >= 1:  # below 1, or NaN from a non-finite gradient: multiply, as torch does
        torch._foreach_mul_(grads, coef)


@torch.no_grad()
def normalize_rows(W_dec: torch.nn.Parameter) -> None:
    W_dec /= W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
