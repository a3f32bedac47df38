"""Fused TopK encoder with a sparse backward, for one dictionary or a stack of E.

Forward: pre = x @ W_enc + b_enc, keep the k largest pre-activations per row,
values = relu(kept). On CPU the rows go through in blocks so each block of
pre-activations is selected while it is still in cache (blocks.py measures
how many rows a block holds on this CPU); the dense pre-activations are never
kept for backward.

Backward touches only the k selected latents per row (g = grad_values masked
by relu):
    grad_x     [N, d_in]       = sum_j g[n, j] * W_enc[:, idx[n, j]]   (embedding_bag on W_enc.T)
    grad_W_enc [d_in, d_dict]  = x.T @ G, G the sparse [N, d_dict] code of g
    grad_b_enc [d_dict]        = index_add of g

An SAE encodes x - b_dec. Given `centre` (b_dec), the kernel subtracts it
itself, and its gradient needs no pass over the rows:
    grad_centre [d_in]         = -W_enc @ grad_b_enc
so when x needs no gradient (activations from a store), grad_x is never built.

A stack of E dictionaries (W_enc [E, d_in, d_dict], one k per member) is one
dictionary of E * d_dict latents whose member e sees only rows e*N..(e+1)*N of
the stacked inputs: the backward is the same three ops on member-offset
indices. Members with a smaller k than the largest are padded with zero values
(on latent 0), which add nothing to any sum.

grad_W_enc is built latent-major ([d_dict, d_in], transposed on return). Store
W_enc the same way (a [d_dict, d_in] tensor viewed as [d_in, d_dict], as
nn.Linear.weight.T is) and autograd keeps that gradient without a copy, and
grad_x reads W_enc.T without one: two [d_in, d_dict] copies fewer per step.

Under autocast (torch.autocast, CPU or CUDA) the encoder GEMM and the
selection run in the autocast dtype and the values come back in it; the
backward (sparse, cheap) runs in the dtype of W_enc.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from .blocks import block_buffer, block_rows
from .segment import bag_sums, member_offsets, transpose_gather_sum
from .topk import topk_rows


def compute_dtype(t: Tensor) -> torch.dtype:
    """The dtype a matmul on `t` runs in: the autocast dtype when autocast is on for t's device, else t's."""
    device = t.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else t.dtype


def _select_block(pre: Tensor, k: int, score_scale: Tensor | None) -> tuple[Tensor, Tensor]:
    if score_scale is None:
        return topk_rows(pre, k)
    _, indices = topk_rows(pre.relu() * score_scale, k)
    return pre.gather(1, indices), indices


def _select_in_blocks(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, rows: int,
                      score_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Top-k pre-activations of x [N, d_in] on CPU, at most `rows` rows at a time in this thread's block buffer.

    The blocks are made even (no small last block): MKL computes a row's pre-activations to the same bits in
    any block of 16+ rows, but not in a block of a few rows, so this keeps the codes independent of `rows`."""
    n = x.shape[0]
    rows = max(1, -(-n // max(1, -(-n // rows))))  # ceil(n / number of blocks)
    pre = block_buffer(rows, W_enc.shape[1], x.dtype)
    if n <= rows:
        return _select_block(torch.addmm(b_enc, x, W_enc, out=pre[:n]), k, score_scale)
    values = x.new_empty(n, k)
    indices = torch.empty(n, k, dtype=torch.long)
    for s in range(0, n, rows):
        end = min(s + rows, n)
        block = torch.addmm(b_enc, x[s:end], W_enc, out=pre[: end - s])
        values[s:end], indices[s:end] = _select_block(block, k, None if score_scale is None else score_scale[s:end])
    return values, indices


def _select_rows(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, score_scale: Tensor | None) -> tuple[Tensor, Tensor]:
    """Top-k pre-activations of x [N, d_in] (ranked by relu(pre) * score_scale if given): one GEMM off CPU,
    blocks of rows on CPU."""
    if x.device.type != "cpu":
        return _select_block(torch.addmm(b_enc, x, W_enc), k, score_scale)
    rows = block_rows(x, W_enc, b_enc, k, _select_in_blocks)
    return _select_in_blocks(x, W_enc, b_enc, k, rows, score_scale)


def _one_gemm_for_the_stack(x: Tensor) -> bool:
    """Off CPU a stack with one k runs one batched GEMM and one top-k; on CPU members go in cache-sized blocks."""
    return x.device.type != "cpu"


def _select(x: Tensor, W_enc: Tensor, b_enc: Tensor, ks: tuple[int, ...], score_scale: Tensor | None):
    """x [E*N, d_in], W_enc [E, d_in, d_dict], b_enc [E, d_dict] -> values, local indices [E*N, max(ks)]."""
    e, n = len(ks), x.shape[0] // len(ks)
    k_max = max(ks)
    if e == 1:
        return _select_rows(x, W_enc[0], b_enc[0], k_max, score_scale)
    if len(set(ks)) == 1 and _one_gemm_for_the_stack(x):
        pre = torch.baddbmm(b_enc[:, None], x.view(e, n, -1), W_enc).view(e * n, -1)
        return _select_block(pre, k_max, score_scale)
    values = x.new_zeros(e * n, k_max)  # members with k < k_max keep zero values (latent 0) in the padding
    indices = torch.zeros(e * n, k_max, dtype=torch.long, device=x.device)
    for m, k in enumerate(ks):
        rows = slice(m * n, (m + 1) * n)
        scale = None if score_scale is None else score_scale[rows]
        values[rows, :k], indices[rows, :k] = _select_rows(x[rows], W_enc[m], b_enc[m], k, scale)
    return values, indices


def _latent_major(W_enc: Tensor) -> Tensor:
    """W_enc [E, d_in, d_dict] -> its rows per latent [E * d_dict, d_in], contiguous (a view if stored so)."""
    n_members, d_in, d_dict = W_enc.shape
    rows = W_enc.transpose(1, 2)
    if rows.is_contiguous():
        return rows.reshape(n_members * d_dict, d_in)
    out = W_enc.new_empty(n_members * d_dict, d_in)
    for m in range(n_members):  # 2-D transposes take CPU copy's blocked path; one 3-D copy is ~3x slower
        out[m * d_dict:(m + 1) * d_dict].copy_(rows[m])
    return out


def _like(rows: Tensor, W_enc: Tensor) -> Tensor:
    """Latent-major rows [E * d_dict, d_in] -> a [E, d_in, d_dict] gradient laid out as W_enc is."""
    n_members, d_in, d_dict = W_enc.shape
    grad = rows.view(n_members, d_dict, d_in).transpose(1, 2)
    if W_enc.transpose(1, 2).is_contiguous():
        return grad
    out = torch.empty_like(W_enc, memory_format=torch.contiguous_format)
    for m in range(n_members):
        out[m].copy_(grad[m])
    return out


def _centred(x: Tensor, centre: Tensor | None) -> Tensor:
    """x [E*N, d_in] minus member e's centre [E, d_in] on its rows; x itself without a centre."""
    if centre is None:
        return x
    n_members = centre.shape[0]
    return (x.view(n_members, -1, x.shape[1]) - centre[:, None].to(x.dtype)).view(x.shape)


def _sort_codes(values: Tensor, indices: Tensor, ks: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Each row's codes in increasing latent order: a canonical order, so sums no longer depend on how they were picked."""
    if len(set(ks)) == 1:
        indices, order = indices.sort(dim=1)
        return values.gather(1, order), indices
    n = len(values) // len(ks)
    for m, k in enumerate(ks):
        rows = slice(m * n, (m + 1) * n)
        indices[rows, :k], order = indices[rows, :k].sort(dim=1)
        values[rows, :k] = values[rows, :k].gather(1, order)
    return values, indices


class TopKEncode(torch.autograd.Function):
    """(x [E*N, d_in], W_enc [E, d_in, d_dict], b_enc [E, d_dict], ks, score_scale, centre [E, d_in] or None)
    -> (values, indices [E*N, max(ks)])."""

    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, ks: tuple[int, ...], score_scale: Tensor | None,
                centre: Tensor | None):
        dtype = compute_dtype(x)
        xc = _centred(x, centre)
        with torch.autocast(x.device.type, enabled=False):
            values, indices = _select(xc.to(dtype), W_enc.to(dtype), b_enc.to(dtype), ks, score_scale)
        values, indices = _sort_codes(values, indices, ks)
        values = values.relu_()
        ctx.save_for_backward(xc, W_enc, values, indices)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values: Tensor, _grad_indices: Tensor | None):
        xc, W_enc, values, indices = ctx.saved_tensors
        n_members, d_in, d_dict = W_enc.shape
        flat = member_offsets(indices, n_members, d_dict)
        g = grad_values.to(W_enc.dtype) * (values > 0)
        grad_x = grad_W = grad_b = grad_centre = None
        if ctx.needs_input_grad[0]:
            grad_x = bag_sums(g, flat, _latent_major(W_enc)).to(xc.dtype)
        if ctx.needs_input_grad[1]:
            grad_W = _like(transpose_gather_sum(xc.to(g.dtype), g, flat, n_members * d_dict), W_enc)
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[5]:
            grad_b = g.new_zeros(n_members * d_dict).index_add_(0, flat.reshape(-1), g.reshape(-1)).view(n_members, d_dict)
        if ctx.needs_input_grad[5]:  # sum over rows of -grad_x, without building grad_x
            grad_centre = -torch.bmm(W_enc, grad_b[:, :, None])[:, :, 0]
        return grad_x, grad_W, grad_b if ctx.needs_input_grad[2] else None, None, None, grad_centre


def topk_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int | Sequence[int],
                score_scale: Tensor | None = None, centre: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Top-k ReLU codes of x - centre [..., d_in]: (values [..., k], indices [..., k] int64).

    `centre` [d_in] (an SAE's b_dec; None: x is encoded as it is) is subtracted
    here, so that its gradient costs one GEMV instead of a pass over the rows.
    Gradients reach x, W_enc, b_enc and centre only through the k selected latents
    of each row. `score_scale` [..., d_dict]
    (no gradient) changes only which latents are selected: they are ranked by
    relu(pre) * score_scale (gradient SAEs); the kept values are still relu(pre).

    A stack of E dictionaries: W_enc [E, d_in, d_dict], b_enc [E, d_dict], x [E, ..., d_in]
    and k an int or one per member, centre [E, d_in]; values and (member-local) indices are
    [E, ..., max(k)], zero-padded past a member's own k.
    """
    stacked = W_enc.dim() == 3
    W3, b2 = (W_enc, b_enc) if stacked else (W_enc[None], b_enc[None])
    c2 = None if centre is None else centre if stacked else centre[None]
    n_members, d_in, d_dict = W3.shape
    ks = tuple(k) if isinstance(k, Sequence) else (k,) * n_members
    if x.shape[-1] != d_in or b2.shape != (n_members, d_dict) or (stacked and x.shape[0] != n_members) \
            or len(ks) != n_members or (c2 is not None and c2.shape != (n_members, d_in)):
        raise ValueError(
            f"topk_encode: x {tuple(x.shape)}, W_enc {tuple(W_enc.shape)}, b_enc {tuple(b_enc.shape)}, k {k}, centre "
            f"{None if centre is None else tuple(centre.shape)}; expected x [..., d_in], W_enc [d_in, d_dict], "
            "b_enc [d_dict], centre [d_in], or for a stack of E x [E, ..., d_in], W_enc [E, d_in, d_dict], "
            "b_enc [E, d_dict], centre [E, d_in] and one k or E of them"
        )
    for one in ks:
        if not 1 <= one <= d_dict:
            raise ValueError(f"topk_encode: k={one} must be between 1 and d_dict={d_dict}")
    lead = x.shape[:-1]
    if score_scale is not None:
        score_scale = score_scale.detach().reshape(-1, d_dict)
    values, indices = TopKEncode.apply(x.reshape(-1, d_in), W3, b2, ks, score_scale, c2)
    return values.reshape(*lead, max(ks)), indices.reshape(*lead, max(ks))
