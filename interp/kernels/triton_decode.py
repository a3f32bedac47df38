"""Triton kernels for `sparse_decode` (forward and backward), one program per row.

    forward      out[n, d]   = sum_j values[n, j] * W_dec[indices[n, j], d]
    grad_values  gv[n, j]    = sum_d grad_out[n, d] * W_dec[indices[n, j], d]
    grad_W_dec   gW[i, d]   += values[n, j] * grad_out[n, d] for indices[n, j] == i (atomic adds)

Run on CUDA tensors; with TRITON_INTERPRET=1 set before this module is
imported they also run on CPU (slowly), which is how the tests check them
against the torch path. Accumulation is in float32 (float64 for float64).
"""

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_D = 128
BLOCK_K = 16


@triton.jit
def _decode_fwd(val_ptr, idx_ptr, w_ptr, out_ptr, K, D, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    acc = tl.zeros([BLOCK_D], dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        idx = tl.load(idx_ptr + n * K + offs_k, mask=mask_k, other=0)
        val = tl.load(val_ptr + n * K + offs_k, mask=mask_k, other=0.0).to(ACC)
        rows = tl.load(w_ptr + idx[:, None] * D + offs_d[None, :], mask=mask_k[:, None] & mask_d[None, :], other=0.0)
        acc += tl.sum(rows.to(ACC) * val[:, None], axis=0)
    tl.store(out_ptr + n * D + offs_d, acc.to(out_ptr.dtype.element_ty), mask=mask_d)


@triton.jit
def _decode_bwd_values(grad_ptr, idx_ptr, w_ptr, gv_ptr, K, D, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_k = offs_k < K
    idx = tl.load(idx_ptr + n * K + offs_k, mask=mask_k, other=0)
    acc = tl.zeros([BLOCK_K], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        g = tl.load(grad_ptr + n * D + offs_d, mask=mask_d, other=0.0).to(ACC)
        rows = tl.load(w_ptr + idx[:, None] * D + offs_d[None, :], mask=mask_k[:, None] & mask_d[None, :], other=0.0)
        acc += tl.sum(rows.to(ACC) * g[None, :], axis=1)
    tl.store(gv_ptr + n * K + offs_k, acc.to(gv_ptr.dtype.element_ty), mask=mask_k)


@triton.jit
def _decode_bwd_weight(grad_ptr, idx_ptr, val_ptr, gw_ptr, K, D, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    g = tl.load(grad_ptr + n * D + offs_d, mask=mask_d, other=0.0).to(ACC)
    for j in range(0, K):
        i = tl.load(idx_ptr + n * K + j)
        v = tl.load(val_ptr + n * K + j).to(ACC)
        tl.atomic_add(gw_ptr + i * D + offs_d, v * g, mask=mask_d)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def decode_fwd(values: Tensor, indices: Tensor, W_dec: Tensor) -> Tensor:
    """values [N, k], indices [N, k], W_dec [d_dict, d_out] -> [N, d_out]."""
    (n, k), d = values.shape, W_dec.shape[1]
    out = W_dec.new_empty(n, d)
    grid = (n, triton.cdiv(d, BLOCK_D))
    _decode_fwd[grid](values.to(W_dec.dtype), indices, W_dec, out, k, d, BLOCK_K, BLOCK_D, _acc(W_dec.dtype))
    return out


def decode_bwd_values(grad_out: Tensor, indices: Tensor, W_dec: Tensor, dtype: torch.dtype) -> Tensor:
    """grad_out [N, d_out] -> grad_values [N, k] in `dtype`."""
    n, k = indices.shape
    gv = torch.empty(n, k, dtype=dtype, device=grad_out.device)
    grid = (n, triton.cdiv(k, BLOCK_K))
    _decode_bwd_values[grid](grad_out, indices, W_dec, gv, k, W_dec.shape[1], BLOCK_K, BLOCK_D, _acc(dtype))
    return gv


def decode_bwd_weight(grad_out: Tensor, values: Tensor, indices: Tensor, d_dict: int, dtype: torch.dtype) -> Tensor:
    """grad_out [N, d_out] -> grad_W_dec [d_dict, d_out] in `dtype` (accumulated in float32 or float64)."""
    (n, k), d = indices.shape, grad_out.shape[1]
    acc_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    gw = torch.zeros(d_dict, d, dtype=acc_dtype, device=grad_out.device)
    grid = (n, triton.cdiv(d, BLOCK_D))
    _decode_bwd_weight[grid](grad_out, indices, values, gw, k, d, BLOCK_D, _acc(dtype))
    return gw.to(dtype)


class TritonSparseDecode(torch.autograd.Function):
    """(values [N, k], indices [N, k], W_dec [d_dict, d_out]) -> [N, d_out], Triton kernels."""

    @staticmethod
    def forward(ctx, values: Tensor, indices: Tensor, W_dec: Tensor) -> Tensor:
        values, indices, W_dec = values.contiguous(), indices.contiguous(), W_dec.contiguous()
        ctx.save_for_backward(values, indices, W_dec)
        return decode_fwd(values, indices, W_dec)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        values, indices, W_dec = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_values = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_values = decode_bwd_values(grad_out, indices, W_dec, values.dtype)
        if ctx.needs_input_grad[2]:
            grad_W = decode_bwd_weight(grad_out, values, indices, W_dec.shape[0], W_dec.dtype)
        return grad_values, None, grad_W
