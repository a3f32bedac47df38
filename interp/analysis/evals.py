"""Evaluating a dictionary on held-out text: reconstruction (L0, MSE, FVU,
explained variance, cosine), downstream loss with the dictionary spliced in
(CE, CE recovered against zero ablation, KL to the clean model), and latent
density (dead and dense fractions). BOS positions are excluded throughout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from interp.data.tokens import token_mask
from interp.dictionary import Dictionary
from interp.hooks import replace_hooks, splice_hooks

DENSE_THRESHOLD = 0.1  # a latent firing on more than 10% of tokens counts as dense


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


@torch.no_grad()
def evaluate(model, dictionary: Dictionary, tokens: torch.Tensor, batch_size: int = 8) -> tuple[dict[str, float], torch.Tensor]:
    """Metrics on `tokens` [n, n_ctx]; also returns each latent's firing density [d_dict]."""
    cfg = dictionary.cfg
    s = _Sums(cfg.d_dict, cfg.d_out)
    device = dictionary.W_enc.device
    for chunk in tqdm(tokens.split(batch_size), desc="eval", unit="batch", leave=False):
        chunk = chunk.to(device)
        mask = token_mask(model, chunk)
        logits, cache = model.run_with_cache(chunk, names_filter=[cfg.hook_in, cfg.hook_out])
        x = cache[cfg.hook_in].reshape(*mask.shape, -1)[mask].to(dictionary.W_enc.dtype)
        y = cache[cfg.hook_out].reshape(*mask.shape, -1)[mask].double()
        _accumulate_reconstruction(s, dictionary, x, y)
        spliced = model.run_with_hooks(chunk, fwd_hooks=splice_hooks(dictionary, mask))
        zero = model.run_with_hooks(chunk, fwd_hooks=replace_hooks(cfg.hook_out, torch.zeros_like, mask))
        _accumulate_loss(s, model, chunk, logits, spliced, zero)
    return _metrics(s), s.fires.double() / max(1, s.tokens)


def _accumulate_reconstruction(s: _Sums, dictionary: Dictionary, x: torch.Tensor, y: torch.Tensor) -> None:
    codes = dictionary.encode(x)
    recon = (dictionary.decode(codes) + dictionary.skip(x)).double()
    s.tokens += len(y)
    s.sq_err += (recon - y).pow(2).sum().item()
    s.sq_norm += y.pow(2).sum().item()
    s.sum_y += y.sum(0).cpu()
    s.cos += F.cosine_similarity(recon, y, dim=-1).sum().item()
    active = codes != 0
    s.l0 += active.sum().item()
    s.fires += active.sum(0).cpu()


def _accumulate_loss(s: _Sums, model, tokens, clean, spliced, zero) -> None:
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
