"""Exact row-wise top-k that is faster than `torch.topk` on CPU for wide rows.

Each row of `pre [N, M]` is cut into C = M // g strided columns groups (element
m belongs to group m % C). The k groups with the largest maxima hold every
top-k element: the k-th largest value is at least the k-th largest group
maximum, and the other groups never exceed that maximum. So a top-k over the
C group maxima, then a top-k over the k * g candidates, gives an exact top-k
(ties are broken arbitrarily, as `torch.topk` does) after reading each row
once with a vectorised `amax`.
"""

import torch
from torch import Tensor

GROUP_SIZES = (16, 8, 4)


def _group_size(m: int, k: int) -> int | None:
    """The largest g that divides m and leaves at least k groups, fewer candidates than m."""
    for g in GROUP_SIZES:
        if m % g == 0 and m // g >= k and k * g < m:
            return g
    return None


def topk_rows(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k per row of `pre [N, M]`, unsorted: (values [N, k], indices [N, k] int64)."""
    n, m = pre.shape
    g = _group_size(m, k) if pre.device.type == "cpu" else None
    if g is None:
        return pre.topk(k, dim=1, sorted=False)
    c = m // g
    groups = pre.view(n, g, c)
    _, cols = groups.amax(dim=1).topk(k, dim=1, sorted=False)  # [n, k] group ids
    cand = groups.gather(2, cols[:, None, :].expand(n, g, k)).reshape(n, g * k)
    values, pos = cand.topk(k, dim=1, sorted=False)  # pos = row_in_group * k + j
    indices = torch.div(pos, k, rounding_mode="floor") * c + cols.gather(1, pos % k)
    return values, indices
