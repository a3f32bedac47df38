"""What an intervention is: a change to some latents of one dictionary at some positions,
applied to its codes [batch, pos, d_dict] (`Intervention.apply`), plus the held-out mean
codes that mean-ablation needs (`mean_codes`)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from interp.data.tokens import token_mask
from interp.dictionary import Dictionary
from interp.model import hook_layer

WHATS = ("clamp", "add", "scale", "ablate")
AFTER_BOS = slice(1, None)  # every position but the first (the BOS token of prompts built by interp)


@dataclass(frozen=True)
class Intervention:
    """A change to `latents` of `dictionary` (an SAE, a transcoder, an attention-output SAE, any Dictionary).

    what:  "clamp" sets the latents to `value`; "add" adds `value` to them, which moves the dictionary's output
           by value * W_dec[latent] (steering); "scale" multiplies them by `value`; "ablate" sets them to zero,
           or, with `mean` ([d_dict], from `mean_codes` on held-out text), to their mean.
    where: "all" positions, one position (an int; negative counts back from the prompt's end), a slice of the
           sequence (AFTER_BOS skips the BOS token), or "new": only the tokens `generate` adds.
    Build one with the class methods: Intervention.clamp(sae, 12, 5.0), .add(...), .scale(...), .ablate(...).
    """

    dictionary: Dictionary = field(compare=False, repr=False)
    latents: tuple[int, ...]
    what: str = "add"
    value: float = 0.0
    where: int | slice | str = "all"
    mean: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        ids = torch.as_tensor(self.latents)
        if ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex():
            raise ValueError(f"latents must be integer indices, got {self.latents!r}.")
        latents = tuple(ids.flatten().tolist())
        object.__setattr__(self, "latents", latents)
        if not isinstance(self.where, (str, slice)):
            object.__setattr__(self, "where", _position(self.where))
        d_dict = self.dictionary.cfg.d_dict
        if not latents:
            raise ValueError("An intervention needs at least one latent; got none.")
        bad = [i for i in latents if not 0 <= i < d_dict]
        if bad:
            raise ValueError(f"Latent {bad[0]} is out of range: this dictionary has {d_dict} latents (0 to {d_dict - 1}).")
        if self.what not in WHATS:
            raise ValueError(f"Unknown intervention {self.what!r}; expected one of {', '.join(WHATS)}.")
        if not math.isfinite(self.value):
            raise ValueError(f"The intervention's value must be a finite number, got {self.value}.")
        if isinstance(self.where, bool) or not (isinstance(self.where, (int, slice)) or self.where in ("all", "new")):
            raise ValueError(f"where={self.where!r} is not a position: expected 'all', 'new', an int or a slice.")
        if self.mean is not None:
            if self.what != "ablate" or self.mean.shape != (d_dict,) or not torch.isfinite(self.mean).all():
                raise ValueError(f"mean must be finite codes of shape [{d_dict}] (from mean_codes) and only goes with "
                                 f"what='ablate'; got shape {tuple(self.mean.shape)} with what={self.what!r}.")

    # --- constructors ------------------------------------------------------------
    @classmethod
    def clamp(cls, dictionary, latents, value: float, where="all") -> Intervention:
        return cls(dictionary, latents, "clamp", float(value), where)

    @classmethod
    def add(cls, dictionary, latents, coeff: float, where="all") -> Intervention:
        return cls(dictionary, latents, "add", float(coeff), where)

    @classmethod
    def scale(cls, dictionary, latents, factor: float, where="all") -> Intervention:
        return cls(dictionary, latents, "scale", float(factor), where)

    @classmethod
    def ablate(cls, dictionary, latents, where="all", mean: torch.Tensor | None = None) -> Intervention:
        return cls(dictionary, latents, "ablate", 0.0, where, mean)

    # --- applying ----------------------------------------------------------------
    def positions(self, seq_len: int, prompt_len: int | None = None) -> int | slice:
        """The positions of a sequence of `seq_len` tokens (the first `prompt_len` the prompt) this changes."""
        prompt_len = seq_len if prompt_len is None else prompt_len
        if self.where == "all":
            return slice(None)
        if self.where == "new":
            return slice(prompt_len, None)
        if isinstance(self.where, slice):  # indexes the whole sequence, generated tokens included
            if self.where.start is not None and not -prompt_len <= self.where.start < prompt_len:
                raise ValueError(f"The slice {self.where} starts beyond the prompt ({prompt_len} tokens).")
            return self.where
        if not -prompt_len <= self.where < prompt_len:
            raise ValueError(f"Position {self.where} is beyond the prompt ({prompt_len} tokens); "
                             f"use a position from {-prompt_len} to {prompt_len - 1}.")
        return self.where % prompt_len

    def apply(self, codes: torch.Tensor, prompt_len: int | None = None) -> torch.Tensor:
        """codes [batch, pos, d_dict] -> a changed copy."""
        new = codes.clone()
        view = new[:, self.positions(codes.shape[1], prompt_len)]  # a view: basic indexing
        idx = torch.tensor(self.latents, device=codes.device)
        view[..., idx] = self._change(view[..., idx])
        return new

    def _change(self, x: torch.Tensor) -> torch.Tensor:
        if self.what == "clamp":
            return torch.full_like(x, self.value)
        if self.what == "add":
            return x + self.value
        if self.what == "scale":
            return x * self.value
        if self.mean is None:
            return torch.zeros_like(x)
        return self.mean.to(x)[list(self.latents)].expand_as(x)


def _position(where) -> int:
    try:
        return operator.index(where)
    except TypeError:
        raise ValueError(f"where={where!r} is not a position: expected 'all', 'new', an int or a slice.") from None


def edit_codes(rows: list[list[Intervention]], prompt_len: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """codes [batch, pos, d_dict] -> codes with rows[b]'s interventions applied to row b
    (one row: the same interventions for every row of the batch)."""

    def edit(codes: torch.Tensor) -> torch.Tensor:
        if len(rows) == 1:
            return _apply_all(rows[0], codes, prompt_len)
        if len(rows) != len(codes):
            raise ValueError(f"{len(rows)} rows of interventions for a batch of {len(codes)} sequences.")
        return torch.cat([_apply_all(ivs, codes[b : b + 1], prompt_len) for b, ivs in enumerate(rows)])

    return edit


def _apply_all(interventions: Iterable[Intervention], codes: torch.Tensor, prompt_len: int | None) -> torch.Tensor:
    for iv in interventions:
        codes = iv.apply(codes, prompt_len)
    return codes


@torch.no_grad()
def mean_codes(model, dictionary: Dictionary, tokens: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """[d_dict] each latent's mean code over the non-BOS positions of held-out `tokens` [n, n_ctx]
    (for mean-ablation: Intervention.ablate(d, latents, mean=mean_codes(...)))."""
    hook = dictionary.cfg.hook_in
    total = torch.zeros(dictionary.cfg.d_dict, dtype=torch.float64)
    count = 0
    for batch in tqdm(tokens.split(batch_size), desc="mean codes", leave=False):
        batch = batch.to(model.cfg.device)
        _, cache = model.run_with_cache(batch, names_filter=[hook], stop_at_layer=hook_layer(hook) + 1)
        x = cache[hook].reshape(*batch.shape, -1)[token_mask(model, batch)]
        total += dictionary.encode(x.to(dictionary.W_enc.dtype)).double().sum(0).cpu()
        count += len(x)
    if count == 0:
        raise ValueError("mean_codes got no non-BOS tokens; pass held-out contexts [n, n_ctx].")
    return (total / count).to(dictionary.W_enc.dtype)
