"""Fused TopK encoder with a sparse backward.

Forward: pre = x @ W_enc + b_enc, keep the k largest pre-activations per row,
values = relu(kept). On CPU the rows go through in chunks so each chunk of
pre-activations is selected while it is still in cache; the dense
pre-activations are never kept for backward.

Backward touches only the k selected latents per row (g = grad_values masked
by relu):
    grad_x     [N, d_in]       = sum_j g[n, j] * W_enc[:, idx[n, j]]   (embedding_bag on W_enc.T)
    grad_W_enc [d_in, d_dict]  = x.T @ G, G the sparse [N, d_dict] code of g
    grad_b_enc [d_dict]        = index_add of g

grad_W_enc is built latent-major ([d_dict, d_in], transposed on return). Store
W_enc the same way (a [d_dict, d_in] tensor viewed as [d_in, d_dict], as
nn.Linear.weight.T is) and autograd keeps that gradient without a copy, and
grad_x reads W_enc.T without one: two [d_in, d_dict] copies fewer per step.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from .segment import transpose_gather_sum
from .topk import topk_rows

CPU_CHUNK_ROWS = 256  # 256 x d_dict pre-activations stay in cache; measured best of 128/256/512


def _select_block(pre: Tensor, k: int, score_scale: Tensor | None) -> tuple[Tensor, Tensor]:
    if score_scale is None:
        return topk_rows(pre, k)
    _, indices = topk_rows(pre.relu() * score_scale, k)
    return pre.gather(1, indices), indices


def _select(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, score_scale: Tensor | None) -> tuple[Tensor, Tensor]:
    """Top-k pre-activations of x [N, d_in] (ranked by relu(pre) * score_scale if given)."""
    n = x.shape[0]
    chunk = CPU_CHUNK_ROWS if x.device.type == "cpu" else n
    if n <= chunk:
        return _select_block(torch.addmm(b_enc, x, W_enc), k, score_scale)
    values = x.new_empty(n, k)
    indices = torch.empty(n, k, dtype=torch.long, device=x.device)
    pre = x.new_empty(chunk, W_enc.shape[1])
    for s in range(0, n, chunk):
        rows = slice(s, min(s + chunk, n))
        block = torch.addmm(b_enc, x[rows], W_enc, out=pre[: rows.stop - s])
        values[rows], indices[rows] = _select_block(block, k, None if score_scale is None else score_scale[rows])
    return values, indices


class TopKEncode(torch.autograd.Function):
    """(x [N, d_in], W_enc [d_in, d_dict], b_enc [d_dict], k) -> (values [N, k], indices [N, k])."""

    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, score_scale: Tensor | None):
        values, indices = _select(x, W_enc, b_enc, k, score_scale)
        indices, order = indices.sort(dim=1)  # a canonical order: sums no longer depend on how latents were picked
        values = values.gather(1, order)
        values = values.relu_()
        ctx.save_for_backward(x, W_enc, values, indices)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values: Tensor, _grad_indices: Tensor | None):
        x, W_enc, values, indices = ctx.saved_tensors
        d_dict = W_enc.shape[1]
        g = grad_values * (values > 0)
        grad_x = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(indices, W_enc.t().contiguous(), mode="sum", per_sample_weights=g)
        if ctx.needs_input_grad[1]:
            grad_W = transpose_gather_sum(x, g, indices, d_dict).t()
        if ctx.needs_input_grad[2]:
            grad_b = g.new_zeros(d_dict).index_add_(0, indices.reshape(-1), g.reshape(-1))
        return grad_x, grad_W, grad_b, None, None


def topk_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, score_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Top-k ReLU codes of x [..., d_in]: (values [..., k], indices [..., k] int64).

    x must already have b_dec subtracted. Gradients reach x, W_enc and b_enc
    only through the k selected latents of each row. `score_scale` [..., d_dict]
    (no gradient) changes only which latents are selected: they are ranked by
    relu(pre) * score_scale (gradient SAEs); the kept values are still relu(pre).
    """
    d_in, d_dict = W_enc.shape
    if x.shape[-1] != d_in or b_enc.shape != (d_dict,):
        raise ValueError(
            f"topk_encode: x {tuple(x.shape)}, W_enc {tuple(W_enc.shape)}, b_enc {tuple(b_enc.shape)}; "
            "expected x [..., d_in], W_enc [d_in, d_dict], b_enc [d_dict]"
        )
    if not 1 <= k <= d_dict:
        raise ValueError(f"topk_encode: k={k} must be between 1 and d_dict={d_dict}")
    lead = x.shape[:-1]
    if score_scale is not None:
        score_scale = score_scale.detach().reshape(-1, d_dict)
    values, indices = TopKEncode.apply(x.reshape(-1, d_in), W_enc, b_enc, k, score_scale)
    return values.reshape(*lead, k), indices.reshape(*lead, k)
