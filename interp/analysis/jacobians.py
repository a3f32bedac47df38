"""Jacobian statistics between adjacent node layers, for the interaction basis.

A step maps node activations x [B, T, d] to the next node's y [B, T', d'] (T' <= T;
output positions align with the last T' input positions). Both sides are
extended with a constant component (bias folding): the derivative of the next
layer with respect to the constant at position p is the bias term
b_p = y_p - (J_eff x)_p, which for an affine step is exactly its bias, and the
output constant depends only on the input constant (derivative 1). J_eff is
the Jacobian at x, or with integrated gradients the mean Jacobian on the path
alpha * x (then b is the midpoint-rule estimate of y at x = 0).

Statistics are accumulated in float64; the model runs in its own dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.func import jvp, vjp, vmap

Step = Callable[[torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x [B,T,d], in_mask [B,T] bool, out_mask [B,T'] bool


def alphas(ig_steps: int) -> list[float]:
    """Midpoints of ig_steps equal intervals of [0, 1]; [1.0] for plain gradients."""
    return [1.0] if ig_steps <= 1 else [(i + 0.5) / ig_steps for i in range(ig_steps)]


def bias_term(step: Step, x: torch.Tensor, ig_steps: int = 1) -> torch.Tensor:
    """b = y(x) - J_eff x  [B, T', d']: what of the output the input does not explain linearly."""
    y = step(x)
    jx = sum(jvp(step, (a * x,), (x,))[1] for a in alphas(ig_steps)) / len(alphas(ig_steps))
    return (y - jx).detach()


def _extend(y: torch.Tensor) -> torch.Tensor:
    return torch.cat([y, torch.ones_like(y[..., :1])], dim=-1)


def _align(v: torch.Tensor, T: int) -> torch.Tensor:
    """Place per-output-position values [B, T', ...] at the last T' of T input positions (zeros elsewhere)."""
    if v.shape[1] == T:
        return v
    out = v.new_zeros(v.shape[0], T, *v.shape[2:])
    out[:, T - v.shape[1]:] = v
    return out


def _pullback(vjp_fns: list, cotangents: torch.Tensor, chunk: int) -> torch.Tensor:
    """Mean over the IG points of the vector-Jacobian products of a stack of cotangents [S, B, T', d']."""
    out = []
    for part in cotangents.split(chunk):
        out.append(sum(vmap(lambda c, f=f: f(c)[0])(part) for f in vjp_fns) / len(vjp_fns))
    return torch.cat(out)


def jacobian_gram(step: Step, batches: Iterable[Batch], C_next: torch.Tensor | None, sources: int = 0, ig_steps: int = 1,
                  seed: int = 0, chunk: int = 16) -> torch.Tensor:
    """M' [(d+1), (d+1)] = E over counted input positions of sum over output positions and next-basis
    directions of (d fhat_next / d x~)(...)^T, where fhat_next = [y, 1] @ C_next [(d'+1), n']
    (C_next None: fhat_next = y, e.g. logits, without building a [d'+1, d'] identity).

    sources=0 pulls back every output (position, direction) exactly; sources=S averages S random +-1
    source vectors over all outputs at once, an unbiased estimate at S backward passes per batch.
    """
    g = torch.Generator().manual_seed(seed)
    M, count = None, 0
    for x, in_mask, out_mask in batches:
        B, T, d = x.shape
        vjp_fns = [vjp(step, a * x)[1] for a in alphas(ig_steps)]
        b = bias_term(step, x, ig_steps)
        C = None if C_next is None else C_next.to(x.dtype)
        bhat = b if C is None else _extend(b) @ C  # [B, T', n']
        Tp, n = bhat.shape[1], bhat.shape[2]
        if sources:
            src = (torch.randint(0, 2, (sources, B, Tp, n), generator=g) * 2 - 1).to(x.dtype)
        else:  # one-hot over (position, direction), the same for every sequence
            src = torch.eye(Tp * n, dtype=x.dtype).reshape(Tp * n, 1, Tp, n).expand(-1, B, -1, -1)
        src = src * out_mask[None, :, :, None].to(x.dtype)
        chunk_now = max(1, min(chunk, int(5e7 // (B * Tp * n))))  # large outputs (LM logits): fewer cotangents at once
        for part in src.split(chunk_now):
            grads = _pullback(vjp_fns, part if C is None else part @ C[:-1].T, chunk_now)  # [S, B, T, d]
            const = _align((part * bhat).sum(-1).permute(1, 2, 0), T).permute(2, 0, 1)  # [S, B, T]
            full = torch.cat([grads, const[..., None]], -1)[:, in_mask].double()  # [S, N, d+1]
            term = torch.einsum("snd,sne->de", full, full)
            M = term if M is None else M + term
        count += int(in_mask.sum())
    if M is None:
        raise ValueError("jacobian_gram got no batches; pass at least one (x, in_mask, out_mask).")
    return M / (count * (sources or 1))


def edge_matrix(step: Step, batches: Iterable[Batch], C_in: torch.Tensor, C_in_pinv: torch.Tensor, C_out: torch.Tensor,
                ig_steps: int = 1, chunk: int = 16) -> torch.Tensor:
    """E [n_out, n_in]: E_ij = E over sequences of sum over output positions p of
    (sum over input positions t of d fhat_out[p, i] / d fhat_in[t, j] * fhat_in[t, j])^2.

    One forward-mode pass per input direction j (tangent fhat_in[:, :, j] along row j of C_in_pinv).
    """
    E, count = None, 0
    for x, in_mask, out_mask in batches:
        T, d = x.shape[1], x.shape[2]
        Ci, Cp, Co = C_in.to(x.dtype), C_in_pinv.to(x.dtype), C_out.to(x.dtype)
        fh = (_extend(x) @ Ci) * in_mask[..., None].to(x.dtype)  # [B, T, n_in]; masked positions carry no tangent
        bhat = _extend(bias_term(step, x, ig_steps)) @ Co  # [B, T', n_out]
        Tp = bhat.shape[1]
        w = out_mask[..., None].to(x.dtype)
        cols = []
        for js in torch.arange(Ci.shape[1]).split(chunk):
            tangents = torch.einsum("btj,jd->jbtd", fh[..., js], Cp[js, :d])
            dy = sum(vmap(lambda t, a=a: jvp(step, (a * x,), (t,))[1])(tangents) for a in alphas(ig_steps)) / len(alphas(ig_steps))
            const = (fh[:, T - Tp:, js] * Cp[js, d]).permute(2, 0, 1)[..., None] * bhat  # [j, B, T', n_out]
            u = dy @ Co[:-1] + const
            cols.append(((u * w) ** 2).double().sum((1, 2)))  # [j, n_out]
        term = torch.cat(cols).T
        E = term if E is None else E + term
        count += x.shape[0]
    if E is None:
        raise ValueError("edge_matrix got no batches.")
    return E / count
