"""Index helpers for top-k codes: bag sums (the decode), the transposed
sparse-dense product (the weight gradient of a top-k code), and the member
offsets of a stack of dictionaries.

Given a sparse code C [N, d_dict] stored as (weights [N, k], indices [N, k]),
`transpose_gather_sum(table, weights, indices, d_dict)` returns C.T @ table,
i.e. out[i] = sum over (n, j) with indices[n, j] == i of weights[n, j] * table[n].

It sorts the N * k entries by latent and runs one `embedding_bag` whose bag i
holds the table rows that chose latent i. Measured on CPU (N 4096, k 32,
d 512): 8 ms, against 16 ms for a CSR `sparse.mm`, 17 ms for the aten
embedding-bag weight backward, 83 ms for `index_add_` of outer products.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def nonzero_entries(weights: Tensor) -> Tensor | None:
    """Flat positions of the nonzero entries of top-k weights [N, k], or None to keep them all.

    Zero-weight entries (a stack's padding, ReLU'd codes, gradients masked by ReLU) add nothing to
    any sum, so on CPU, where the test is cheap, they are left out of the work; on other devices
    (and when there are none) everything goes through, which costs no host sync.
    """
    if weights.device.type != "cpu" or bool(weights.all()):
        return None
    return weights.reshape(-1).nonzero().squeeze(1)


def bag_sums(weights: Tensor, indices: Tensor, table: Tensor) -> Tensor:
    """out[n] = sum_j weights[n, j] * table[indices[n, j]] ([N, k] codes, table [M, d] -> [N, d])."""
    entries = nonzero_entries(weights)
    if entries is None:
        return F.embedding_bag(indices, table, mode="sum", per_sample_weights=weights)
    per_row = (weights != 0).sum(1)
    flat = indices.reshape(-1)[entries]
    return F.embedding_bag(flat, table, per_row.cumsum(0) - per_row, mode="sum",
                           per_sample_weights=weights.reshape(-1)[entries])


def transpose_gather_sum(table: Tensor, weights: Tensor, indices: Tensor, d_dict: int) -> Tensor:
    """C.T @ table for the sparse C given by (weights, indices): table [N, d] -> [d_dict, d]."""
    n, k = indices.shape
    flat, w = indices.reshape(-1), weights.reshape(-1)
    entries = nonzero_entries(weights)
    if entries is not None:
        flat, w = flat[entries], w[entries]
    order = flat.argsort(stable=True)  # the radix sort: 7 ms against 81 ms for the unstable sort
    rows = torch.div(order if entries is None else entries[order], k, rounding_mode="floor")
    counts = torch.bincount(flat, minlength=d_dict)
    offsets = counts.cumsum(0) - counts
    return F.embedding_bag(rows, table, offsets, mode="sum", per_sample_weights=w[order])


def member_offsets(indices: Tensor, n_members: int, d_dict: int) -> Tensor:
    """Member-local latent ids [E*N, k] (member e owns rows e*N..(e+1)*N) -> ids among the stack's E * d_dict latents."""
    if n_members == 1:
        return indices
    first = torch.arange(n_members, device=indices.device) * d_dict
    return indices + first.repeat_interleave(indices.shape[0] // n_members)[:, None]
