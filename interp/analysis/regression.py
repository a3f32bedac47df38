"""Streaming least squares and R^2, in float64 with d^2 memory.

`StreamingLstsq` accumulates X^T X [p, p] and X^T Y [p, d_out] over batches
(p = d_in, plus one for an optional intercept), so fitting on millions of
tokens never holds a [tokens, d] matrix. `R2` accumulates, per output
dimension, the residual sum of squares and the sums that give the total sum of
squares about the mean of the scored data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LinearFit:
    """y ~ x @ weight + bias, with weight [d_in, d_out] and bias [d_out] (zeros without an intercept)."""

    weight: torch.Tensor
    bias: torch.Tensor
    intercept: bool
    ridge: float
    n: int

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """[n, d_in] -> [n, d_out] in x's dtype."""
        w, b = self.weight.to(x.device, x.dtype), self.bias.to(x.device, x.dtype)
        return x @ w + b


class StreamingLstsq:
    """Least squares (optionally ridge) from batches: `update(x, y)` repeatedly, then `solve()`."""

    def __init__(self, d_in: int, d_out: int, intercept: bool = False):
        p = d_in + int(intercept)
        self.d_in, self.d_out, self.intercept = d_in, d_out, intercept
        self.xtx = torch.zeros(p, p, dtype=torch.float64)
        self.xty = torch.zeros(p, d_out, dtype=torch.float64)
        self.n = 0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> StreamingLstsq:
        """x [n, d_in], y [n, d_out] (or [n] when d_out == 1)."""
        x, y = x.detach().double(), y.detach().double().reshape(len(y), -1)
        if x.shape[1] != self.d_in or y.shape[1] != self.d_out or len(x) != len(y):
            raise ValueError(f"Expected x [n, {self.d_in}] and y [n, {self.d_out}], got {tuple(x.shape)} and {tuple(y.shape)}.")
        if self.intercept:
            x = torch.cat([x, x.new_ones(len(x), 1)], dim=1)
        self.xtx += (x.T @ x).cpu()
        self.xty += (x.T @ y).cpu()
        self.n += len(x)
        return self

    def solve(self, ridge: float = 0.0) -> LinearFit:
        """argmin ||Y - X A||^2 + ridge ||A||^2 (the intercept is not penalised).

        Uses a Cholesky solve of the normal equations; when X^T X is singular
        (fewer tokens than dimensions, collinear inputs) it falls back to the
        minimum-norm solution, the same one `torch.linalg.lstsq` gives.
        """
        if self.n == 0:
            raise ValueError("No data: call update(x, y) with at least one batch before solve().")
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}.")
        a = self.xtx.clone()
        a.diagonal()[: self.d_in] += ridge
        chol, info = torch.linalg.cholesky_ex(a)
        rcond = torch.finfo(torch.float64).eps * a.shape[0]
        well_posed = info.item() == 0 and chol.diagonal().min() ** 2 > rcond * a.diagonal().max()
        if well_posed:
            coef = torch.cholesky_solve(self.xty, chol)
        else:  # pinv(X^T X) X^T Y == pinv(X) Y: the minimum-norm least-squares solution
            coef = torch.linalg.pinv(a, hermitian=True, rtol=rcond) @ self.xty
        weight, bias = coef[: self.d_in], coef[self.d_in] if self.intercept else coef.new_zeros(self.d_out)
        return LinearFit(weight, bias, self.intercept, ridge, self.n)


def fit_batches(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], intercept: bool = False, ridge: float = 0.0) -> LinearFit:
    """Fit y ~ x from an iterable of (x [n, d_in], y [n, d_out]) batches."""
    acc = None
    for x, y in pairs:
        y = y.reshape(len(y), -1)
        acc = acc or StreamingLstsq(x.shape[1], y.shape[1], intercept)
        acc.update(x, y)
    if acc is None:
        raise ValueError("No batches to fit on.")
    return acc.solve(ridge)


class R2:
    """Held-out R^2 from batches of (target [n, d], prediction [n, d]).

    total:  1 - sum of squared residuals / total sum of squares about the
            target's mean (the fraction of the target's variance explained)
    per_dim: 1 - SS_res_j / SS_tot_j for every dimension j
    """

    def __init__(self):
        self.ss_res = self.sum = self.sum_sq = None
        self.n = 0

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> R2:
        t, p = target.detach().double().reshape(len(target), -1), pred.detach().double().reshape(len(pred), -1)
        if self.ss_res is None:
            self.ss_res, self.sum, self.sum_sq = (torch.zeros(t.shape[1], dtype=torch.float64) for _ in range(3))
        self.ss_res += (t - p).pow(2).sum(0).cpu()
        self.sum += t.sum(0).cpu()
        self.sum_sq += t.pow(2).sum(0).cpu()
        self.n += len(t)
        return self

    def ss_tot(self) -> torch.Tensor:
        return self.sum_sq - self.sum.pow(2) / self.n

    def total(self) -> float:
        return 1 - (self.ss_res.sum() / self.ss_tot().sum()).item()

    def per_dim(self) -> torch.Tensor:
        return 1 - self.ss_res / self.ss_tot()

    def mean_per_dim(self) -> float:
        return self.per_dim().mean().item()


def r2_score(target: torch.Tensor, pred: torch.Tensor) -> float:
    """R^2 of a prediction of a 1-D (or multi-column) target, pooled over columns."""
    return R2().update(target, pred).total()
