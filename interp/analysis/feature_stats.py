"""Bounded-memory running statistics for every latent of a dictionary.

`FeatureAccumulator` sees batches of codes [batch, pos, d_dict] and keeps, per
latent, state of a fixed size whatever the number of tokens:

- firing count and activation sum (density, mean activation);
- the top-N activations with a window of context (token ids and the latent's
  activation on every token of the window), kept by a heap-like merge: the
  batch's best candidates per latent are concatenated with the kept slots and
  `topk` keeps the best N;
- samples across the activation range: Q bands of the latent's running maximum
  (band j holds activations in [j/Q, (j+1)/Q) of the maximum at the time they
  were seen), each a uniform sample of S firings without replacement (bottom-k
  sketch: every firing gets a uniform random key, the S largest keys are kept,
  which merges with the same machinery as the top-N);
- a fixed-bin histogram of the non-zero activations on [0, upper], where upper
  is a power of two that doubles (adjacent bins merged pairwise) whenever a
  larger activation arrives, so counts are never rescaled approximately.

BOS positions must be zeroed by the caller (they are not features' evidence).
"""

from __future__ import annotations

import math

import torch

EMPTY = float("-inf")


class TopSlots:
    """k slots per group holding the candidates with the largest keys, with their context windows."""

    def __init__(self, groups: int, k: int, window: int):
        self.key = torch.full((groups, k), EMPTY)
        self.value = torch.zeros(groups, k)
        self.ctx = torch.full((groups, k), -1, dtype=torch.long)
        self.pos = torch.full((groups, k), -1, dtype=torch.long)
        self.tokens = torch.full((groups, k, window), -1, dtype=torch.int32)
        self.acts = torch.zeros(groups, k, window)

    def threshold(self) -> torch.Tensor:
        """[groups] the smallest kept key (-inf while a group has a free slot)."""
        return self.key[:, -1]

    def update(self, group: torch.Tensor, key: torch.Tensor, value: torch.Tensor, ctx: torch.Tensor,
               pos: torch.Tensor, windows) -> None:
        """Offer candidates (1-d tensors of equal length); `windows(idx)` builds (tokens, acts) [m, window] for them."""
        better = key > self.threshold()[group]
        group, key, value, ctx, pos = group[better], key[better], value[better], ctx[better], pos[better]
        idx = better.nonzero().squeeze(1)
        if len(group) == 0:
            return
        groups, k = self.key.shape
        order = key.argsort(descending=True, stable=True)
        order = order[group[order].argsort(stable=True)]  # by group, then by key descending
        g = group[order]
        starts = torch.bincount(g, minlength=groups).cumsum(0) - torch.bincount(g, minlength=groups)
        rank = torch.arange(len(g)) - starts[g]
        keep = order[rank < k]
        g, r = group[keep], rank[rank < k]
        tokens, acts = windows(idx[keep])
        new = TopSlots(groups, k, self.tokens.shape[2])
        new.key[g, r], new.value[g, r], new.ctx[g, r], new.pos[g, r] = key[keep], value[keep], ctx[keep], pos[keep]
        new.tokens[g, r], new.acts[g, r] = tokens.to(torch.int32), acts.float()
        self._merge(new)

    def _merge(self, new: TopSlots) -> None:
        key = torch.cat([self.key, new.key], 1)
        top = key.topk(self.key.shape[1], dim=1).indices
        for name in ("key", "value", "ctx", "pos"):
            setattr(self, name, torch.cat([getattr(self, name), getattr(new, name)], 1).gather(1, top))
        w = self.tokens.shape[2]
        idx = top[..., None].expand(-1, -1, w)
        self.tokens = torch.cat([self.tokens, new.tokens], 1).gather(1, idx)
        self.acts = torch.cat([self.acts, new.acts], 1).gather(1, idx)

    def tensors(self, prefix: str, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """The slots as named tensors, groups reshaped to `shape` (e.g. (d_dict,) or (d_dict, bands))."""
        out = {"value": self.value, "ctx": self.ctx, "pos": self.pos, "tokens": self.tokens, "acts": self.acts}
        filled = self.key > EMPTY
        out["value"] = torch.where(filled, self.value, torch.zeros_like(self.value))
        return {f"{prefix}_{n}": t.reshape(*shape, *t.shape[1:]).contiguous() for n, t in out.items()}


class FeatureAccumulator:
    """Running statistics of `d_dict` latents; feed `update(tokens, codes, first_ctx)` per batch."""

    def __init__(self, d_dict: int, n_top: int = 20, bands: int = 4, per_band: int = 5, left: int = 10,
                 right: int = 4, bins: int = 32, n_heads: int = 0, seed: int = 0):
        if bins & (bins - 1):
            raise ValueError(f"bins must be a power of two (the histogram range doubles), got {bins}.")
        self.d_dict, self.bands, self.left, self.right, self.bins = d_dict, bands, left, right, bins
        self.tokens_seen = 0
        self.fires = torch.zeros(d_dict, dtype=torch.long)
        self.act_sum = torch.zeros(d_dict, dtype=torch.float64)
        self.max_act = torch.zeros(d_dict)
        self.hist = torch.zeros(d_dict, bins, dtype=torch.long)
        self.hist_upper = torch.zeros(d_dict)
        self.top = TopSlots(d_dict, n_top, left + 1 + right)
        self.samples = TopSlots(d_dict * bands, per_band, left + 1 + right)
        self.head_sum = torch.zeros(d_dict, n_heads, dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def update(self, tokens: torch.Tensor, codes: torch.Tensor, first_ctx: int, n_tokens: int | None = None,
               heads=None) -> None:
        """tokens [batch, pos]; codes [batch, pos, d_dict] (zero at BOS); contexts numbered from `first_ctx`;
        n_tokens: positions that count towards density (default all).

        heads(rows, latent) -> per-head contributions [len(rows), n_heads] for attention SAEs.
        """
        batch, n_pos = tokens.shape
        flat = codes.reshape(batch * n_pos, self.d_dict).float()
        self.tokens_seen += batch * n_pos if n_tokens is None else n_tokens
        rows, feats = (flat > 0).nonzero(as_tuple=True)
        vals = flat[rows, feats]
        self.fires += torch.bincount(feats, minlength=self.d_dict)
        self.act_sum.index_add_(0, feats, vals.double())
        self.max_act = torch.maximum(self.max_act, flat.amax(0).clamp_min(0))
        self._histogram(feats, vals)
        ctx, pos = first_ctx + rows // n_pos, rows % n_pos

        def windows(idx: torch.Tensor):
            return self._windows(tokens, flat, rows[idx], feats[idx])

        self.top.update(feats, vals, vals, ctx, pos, windows)
        band = (vals / self.max_act[feats] * self.bands).long().clamp(0, self.bands - 1)
        keys = torch.rand(len(vals), generator=self.generator)
        self.samples.update(feats * self.bands + band, keys, vals, ctx, pos, windows)
        if heads is not None and len(feats):
            for latent in feats.unique().tolist():
                self.head_sum[latent] += heads(rows[feats == latent], latent).double().sum(0)

    def _windows(self, tokens: torch.Tensor, flat: torch.Tensor, rows: torch.Tensor, feats: torch.Tensor):
        n_pos = tokens.shape[1]
        offsets = torch.arange(-self.left, self.right + 1)
        t = (rows % n_pos)[:, None] + offsets
        valid = (t >= 0) & (t < n_pos)
        src = (rows - rows % n_pos)[:, None] + t.clamp(0, n_pos - 1)
        tok = torch.where(valid, tokens.reshape(-1)[src], -1)
        act = torch.where(valid, flat[src, feats[:, None]], 0.0)
        return tok, act

    def _histogram(self, feats: torch.Tensor, vals: torch.Tensor) -> None:
        if len(vals) == 0:
            return
        batch_max = torch.zeros(self.d_dict).scatter_reduce_(0, feats, vals, "amax")
        fresh = (self.hist_upper == 0) & (batch_max > 0)
        self.hist_upper[fresh] = torch.exp2(torch.ceil(torch.log2(batch_max[fresh])))
        grow = torch.ceil(torch.log2(batch_max / self.hist_upper.clamp_min(1e-30))).clamp_min(0).long()
        grow[self.hist_upper == 0] = 0
        for doublings in grow.unique().tolist():
            if doublings == 0:
                continue
            which = grow == doublings
            merge = 2 ** min(doublings, int(math.log2(self.bins)))
            merged = self.hist[which].reshape(-1, self.bins // merge, merge).sum(-1)
            self.hist[which] = torch.cat([merged, torch.zeros(len(merged), self.bins - merged.shape[1], dtype=torch.long)], 1)
            self.hist_upper[which] *= 2.0 ** doublings
        b = (vals / self.hist_upper[feats] * self.bins).long().clamp(0, self.bins - 1)
        self.hist.view(-1).index_add_(0, feats * self.bins + b, torch.ones_like(b))

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything kept, as named tensors (their total size does not depend on the tokens seen)."""
        out = {"fires": self.fires, "act_sum": self.act_sum, "max_act": self.max_act, "hist": self.hist,
               "hist_upper": self.hist_upper, "head_sum": self.head_sum}
        out |= self.top.tensors("top", (self.d_dict,))
        out |= self.samples.tensors("sample", (self.d_dict, self.bands))
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())
