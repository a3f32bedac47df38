"""Evaluating a dictionary on held-out text: reconstruction (L0, MSE, FVU,
explained variance, cosine), downstream loss with the dictionary spliced in
(CE, CE recovered against zero ablation, KL to the clean model), and latent
density (dead and dense fractions). BOS positions are excluded throughout.

The clean, spliced and zero-ablated passes share every block before the
earliest hook, so `evaluate_many` runs that prefix once per batch, then the
clean suffix, and each variant only from its own dictionary's block on (the
clean pass records the residual entering it; TransformerLens `start_at_layer`):
a set of per-layer transcoders costs about half of what resuming every variant
at the earliest layer would. The clean and zero-ablated losses do not depend on
the dictionary, so N dictionaries cost one prefix plus N + 1 + (distinct
hook_out) suffix passes instead of 3N full passes. Zeroing the whole residual
stream makes every context that starts with BOS (and has no other) the same
input to the suffix, so that zero-ablated pass runs once per evaluation, for
one context (`_ZeroAblation`): N + 1 suffix passes per batch. `evaluate_reference`
is the plain three-full-pass version the fast path is tested against.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from interp.data.tokens import token_mask
from interp.dictionary import Dictionary
from interp.hooks import replace_hooks, splice_hooks

DENSE_THRESHOLD = 0.1  # a latent firing on more than 10% of tokens counts as dense
ROWS = 64  # predictions per chunk of the loss computation: [ROWS, d_vocab] stays in cache


class _Sums:
    """Running sums from which every metric is derived at the end."""

    def __init__(self, d_dict: int, d_out: int):
        self.tokens = 0
        self.sq_err = self.sq_norm = self.cos = self.l0 = 0.0
        self.sum_y = torch.zeros(d_out, dtype=torch.float64)
        self.fires = torch.zeros(d_dict, dtype=torch.long)
        self.ce = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
        self.kl = 0.0
        self.predictions = 0

    def result(self) -> tuple[dict[str, float], torch.Tensor]:
        return _metrics(self), self.fires.double() / max(1, self.tokens)


@torch.no_grad()
def evaluate(model, dictionary: Dictionary, tokens: torch.Tensor, batch_size: int = 8) -> tuple[dict[str, float], torch.Tensor]:
    """Metrics on `tokens` [n, n_ctx]; also returns each latent's firing density [d_dict]."""
    return evaluate_many(model, [dictionary], tokens, batch_size)[0]


@torch.no_grad()
def evaluate_many(model, dictionaries: list[Dictionary], tokens: torch.Tensor,
                  batch_size: int = 8) -> list[tuple[dict[str, float], torch.Tensor]]:
    """(metrics, density [d_dict]) of each dictionary on `tokens` [n, n_ctx], sharing the model passes."""
    if not dictionaries:
        return []
    sums = [_Sums(d.cfg.d_dict, d.cfg.d_out) for d in dictionaries]
    names = [(_alias(model, d.cfg.hook_in), _alias(model, d.cfg.hook_out)) for d in dictionaries]
    starts = [_first_block(model, list(pair)) for pair in names]  # where each dictionary's variants resume
    start = None if None in starts else min(starts)
    if start is None:  # a hook in the embedding: every pass runs in full
        starts = [None] * len(starts)
    entries = {b: _entering(model, b) for b in set(starts) if b != start}
    device = dictionaries[0].W_enc.device
    zero = _ZeroAblation(model)
    for chunk in tqdm(tokens.split(batch_size), desc="eval", unit="batch", leave=False):
        chunk = chunk.to(device)
        mask = token_mask(model, chunk)
        rows = _Predictions(model, chunk)
        resid, kwargs = _prefix(model, chunk, start)
        acts = {}
        capture = [(n, lambda act, hook: acts.__setitem__(hook.name, act))
                   for n in dict.fromkeys([*sum(names, ()), *entries.values()])]
        clean = model.run_with_hooks(resid, fwd_hooks=capture, **kwargs)
        ce_clean = rows.ce(clean)
        suffix = {start: (resid, kwargs)} | {b: (acts[name], {**kwargs, "start_at_layer": b}) for b, name in entries.items()}
        variants = dict.fromkeys((out, b) for (_, out), b in zip(names, starts))  # distinct (hook_out, start)
        ce_zero = {(out, b): zero.ce(chunk, mask, *suffix[b], out, b) for out, b in variants}
        for d, s, (name_in, name_out), b in zip(dictionaries, sums, names, starts):
            x = acts[name_in].reshape(*mask.shape, -1)[mask].to(d.W_enc.dtype)
            _accumulate_reconstruction(s, d, x, acts[name_out].reshape(*mask.shape, -1)[mask].double())
            hooks = [(_alias(model, n), fn) for n, fn in splice_hooks(d, mask)]
            ce_spliced, kl = rows.ce_kl(clean, model.run_with_hooks(suffix[b][0], fwd_hooks=hooks, **suffix[b][1]))
            for key, value in (("clean", ce_clean), ("spliced", ce_spliced), ("zero", ce_zero[name_out, b])):
                s.ce[key] += value
            s.kl += kl
            s.predictions += rows.n
    return [s.result() for s in sums]


@torch.no_grad()
def evaluate_reference(model, dictionary: Dictionary, tokens: torch.Tensor, batch_size: int = 8) -> tuple[dict[str, float], torch.Tensor]:
    """The slow reference: three full forward passes per batch, losses from float64 log-softmaxes."""
    cfg = dictionary.cfg
    s = _Sums(cfg.d_dict, cfg.d_out)
    device = dictionary.W_enc.device
    for chunk in tqdm(tokens.split(batch_size), desc="eval (reference)", unit="batch", leave=False):
        chunk = chunk.to(device)
        mask = token_mask(model, chunk)
        logits, cache = model.run_with_cache(chunk, names_filter=[cfg.hook_in, cfg.hook_out])
        x = cache[cfg.hook_in].reshape(*mask.shape, -1)[mask].to(dictionary.W_enc.dtype)
        y = cache[cfg.hook_out].reshape(*mask.shape, -1)[mask].double()
        _accumulate_reconstruction(s, dictionary, x, y)
        spliced = model.run_with_hooks(chunk, fwd_hooks=splice_hooks(dictionary, mask))
        zero = model.run_with_hooks(chunk, fwd_hooks=replace_hooks(cfg.hook_out, torch.zeros_like, mask))
        _accumulate_loss_reference(s, model, chunk, logits, spliced, zero)
    return s.result()


def _alias(model, name: str) -> str:
    """blocks.L.hook_resid_post is the tensor blocks.L+1.hook_resid_pre: naming it so starts the suffix a block later."""
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", name)
    if m and int(m.group(1)) + 1 < model.cfg.n_layers:
        return f"blocks.{int(m.group(1)) + 1}.hook_resid_pre"
    return name


def _first_block(model, names: list[str]) -> int | None:
    """The earliest block any hook in `names` sits in (n_layers for ln_final/unembed); None for embedding hooks."""
    blocks = []
    for name in names:
        m = re.match(r"blocks\.(\d+)\.", name)
        if m:
            blocks.append(int(m.group(1)))
        elif name.startswith(("ln_final.", "unembed.")):
            blocks.append(model.cfg.n_layers)
        else:
            return None
    return min(blocks)


def _entering(model, block: int) -> str:
    """The hook holding the residual stream that enters `block` (n_layers: the one entering ln_final)."""
    if block < model.cfg.n_layers:
        return f"blocks.{block}.hook_resid_pre"
    return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"


def _prefix(model, tokens: torch.Tensor, start: int | None) -> tuple[torch.Tensor, dict]:
    """The residual [batch, pos, d_model] entering block `start`, and the forward kwargs that resume from it."""
    if start is None:  # a hook in the embedding: every pass runs in full
        return tokens, {}
    resid, _, pos_embed, attention_mask = model.input_to_embed(tokens)
    kwargs = {"start_at_layer": start, "shortformer_pos_embed": pos_embed, "attention_mask": attention_mask}
    resid = model(resid, start_at_layer=0, stop_at_layer=start, shortformer_pos_embed=pos_embed, attention_mask=attention_mask)
    return resid, kwargs


class _Predictions:
    """The scored next-token predictions of a batch (targets that are not BOS), and their losses from
    logits [batch, pos, d_vocab], computed ROWS predictions at a time so no [n, d_vocab] copy is made."""

    def __init__(self, model, tokens: torch.Tensor):
        keep = token_mask(model, tokens[:, 1:])
        self.batch, self.pos = keep.nonzero(as_tuple=True)
        self.targets = tokens[:, 1:][keep]
        self.n = len(self.targets)

    def _chunks(self, *logits: torch.Tensor):
        for i in range(0, self.n, ROWS):
            b, p, t = self.batch[i:i + ROWS], self.pos[i:i + ROWS], self.targets[i:i + ROWS, None]
            yield t, *(z[b, p].float() for z in logits)

    def ce(self, logits: torch.Tensor) -> float:
        """Summed cross-entropy of the predictions."""
        total = torch.zeros((), dtype=torch.float64, device=logits.device)
        for t, z in self._chunks(logits):
            total += (torch.logsumexp(z, -1) - z.gather(-1, t)[:, 0]).sum(dtype=torch.float64)
        return total.item()

    def ce_from_logp(self, logp: torch.Tensor) -> float:
        """Summed cross-entropy when every context of the batch has the log-probs `logp` [pos, d_vocab]."""
        return -logp[self.pos, self.targets].sum(dtype=torch.float64).item()

    def ce_kl(self, clean: torch.Tensor, spliced: torch.Tensor) -> tuple[float, float]:
        """Summed cross-entropy of `spliced` and summed KL(clean || spliced) over the predictions."""
        ce = torch.zeros((), dtype=torch.float64, device=clean.device)
        kl = torch.zeros((), dtype=torch.float64, device=clean.device)
        for t, zc, zs in self._chunks(clean, spliced):
            lse_c, lse_s = torch.logsumexp(zc, -1, keepdim=True), torch.logsumexp(zs, -1, keepdim=True)
            ce += (lse_s - zs.gather(-1, t)).sum(dtype=torch.float64)
            kl += ((zc - lse_c).exp() * ((zc - zs) - (lse_c - lse_s))).sum(dtype=torch.float64)
        return ce.item(), kl.item()


class _ZeroAblation:
    """Cross-entropy with the activation at a hook zeroed at every scored (non-BOS) position.

    When that hook is the whole residual stream entering the suffix (`blocks.{start}.hook_resid_pre`),
    a context whose only unscored position is its first (BOS) enters the suffix as the same tensor
    as every other such context: zeros, after a first position that saw only the BOS token. Its
    logits are then the same for all of them, so they are computed once (for one context) and
    each such context only gathers its targets from them. Other contexts (a BOS mid-context, other
    hooks) run the suffix as the reference does."""

    def __init__(self, model):
        self.model = model
        self.shared: dict[str, torch.Tensor] = {}  # hook -> the shared log-probs [pos, d_vocab]

    def ce(self, tokens: torch.Tensor, mask: torch.Tensor, resid: torch.Tensor, kwargs: dict, hook: str,
           start: int | None) -> float:
        """Summed cross-entropy over the scored predictions of `tokens` [batch, pos], hook zeroed where `mask`,
        the pass resuming at block `start` from `resid`."""
        own = torch.ones(len(tokens), dtype=torch.bool, device=tokens.device)
        total = 0.0
        if start is not None and hook == f"blocks.{start}.hook_resid_pre":
            own = (~mask[:, 1:]).any(1) | mask[:, 0]  # a BOS after the first position, or no BOS first
            if not own.all():
                logp = self._shared_logp(hook, (~own).nonzero()[0, 0].item(), mask, resid, kwargs)
                total += _Predictions(self.model, tokens[~own]).ce_from_logp(logp)
        if own.any():
            sub_kwargs = {k: v[own] if torch.is_tensor(v) else v for k, v in kwargs.items()}
            logits = self.model.run_with_hooks(resid[own], fwd_hooks=replace_hooks(hook, torch.zeros_like, mask[own]), **sub_kwargs)
            total += _Predictions(self.model, tokens[own]).ce(logits)
        return total

    def _shared_logp(self, hook: str, i: int, mask, resid, kwargs) -> torch.Tensor:
        """The zero-ablated log-probs of context `i` (one that starts with BOS and has no other), computed once."""
        if hook not in self.shared:
            one = {k: v[i:i + 1] if torch.is_tensor(v) else v for k, v in kwargs.items()}
            logits = self.model.run_with_hooks(resid[i:i + 1], fwd_hooks=replace_hooks(hook, torch.zeros_like, mask[i:i + 1]), **one)
            self.shared[hook] = logits[0].float().log_softmax(-1)
        return self.shared[hook]


def _accumulate_reconstruction(s: _Sums, dictionary: Dictionary, x: torch.Tensor, y: torch.Tensor) -> None:
    codes = dictionary.encode(x)
    recon = dictionary.with_skip(dictionary.decode(codes), x).double()
    s.tokens += len(y)
    s.sq_err += (recon - y).pow(2).sum().item()
    s.sq_norm += y.pow(2).sum().item()
    s.sum_y += y.sum(0).cpu()
    s.cos += F.cosine_similarity(recon, y, dim=-1).sum().item()
    active = codes != 0
    s.l0 += active.sum().item()
    s.fires += active.sum(0).cpu()


def _accumulate_loss_reference(s: _Sums, model, tokens, clean, spliced, zero) -> None:
    keep = token_mask(model, tokens[:, 1:])  # predictions of BOS (document boundaries) are not scored
    targets = tokens[:, 1:][keep]
    logp = {name: logits[:, :-1][keep].double().log_softmax(-1) for name, logits in
            (("clean", clean), ("spliced", spliced), ("zero", zero))}
    for name, lp in logp.items():
        s.ce[name] += -lp.gather(-1, targets[:, None]).sum().item()
    s.kl += F.kl_div(logp["spliced"], logp["clean"], log_target=True, reduction="sum").item()
    s.predictions += len(targets)


def _metrics(s: _Sums) -> dict[str, float]:
    n, d = s.tokens, len(s.sum_y)
    total_var = s.sq_norm - (s.sum_y.pow(2).sum().item() / n)
    fvu = s.sq_err / total_var
    ce = {k: v / s.predictions for k, v in s.ce.items()}
    density = s.fires.double() / n
    return {
        "l0": s.l0 / n,
        "mse": s.sq_err / (n * d),
        "fvu": fvu,
        "explained_variance": 1 - fvu,
        "cos_sim": s.cos / n,
        "ce_loss_clean": ce["clean"],
        "ce_loss_spliced": ce["spliced"],
        "ce_loss_zero_ablation": ce["zero"],
        "ce_recovered": (ce["zero"] - ce["spliced"]) / (ce["zero"] - ce["clean"]),
        "kl_spliced": s.kl / s.predictions,
        "dead_fraction": (density == 0).double().mean().item(),
        "dense_fraction": (density > DENSE_THRESHOLD).double().mean().item(),
        "eval_tokens": n,
    }
