"""Feature statistics for every latent of a dictionary, from one streaming model pass.

`compute_feature_stats` runs the model over a text source once, encodes the
activations at the dictionary's `hook_in` and keeps bounded running statistics
per latent (`interp.analysis.feature_stats`): top activating contexts, samples across
the activation range, a histogram, firing density and, for attention-output
SAEs on `hook_z`, each head's mean direct contribution (`interp.analysis.attention`).
Weight-only statistics follow: each decoder direction's direct logit effect and
the nearest latents by decoder cosine. The result, a `FeatureStats`, is saved
as safetensors + JSON (token strings in JSON) so dashboards
(`interp.viz.dashboard`) open without rerunning the model.

Logit effect and the final layer norm: the direct effect of adding a decoder
direction d (mapped into the residual stream through W_O for `hook_z`, W_out
for `mlp.hook_post`) at the end of the residual stream is taken with the final
norm's scale frozen at its mean s over the non-BOS tokens of the pass's first batch, which
makes the unembedding linear:  effect = (centre(d) * w_ln / s) @ W_U, where
centre subtracts the mean over d_model for LayerNorm (not for RMSNorm) and
w_ln is the norm's weight. The bias terms cancel. It is exactly the change in
logits of `model.unembed(model.ln_final(r + d))` minus that of r when
`ln_final.hook_scale` is held at s; it ignores later layers (direct path only).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import einops
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from interp.analysis.attention import head_attribution
from interp.config import write_atomic_text
from interp.data.tokens import iter_contexts, token_mask
from interp.dictionary import Dictionary
from interp.analysis.feature_stats import FeatureAccumulator
from interp.model import decode_tokens, hook_layer, validate_hook

STATS_TENSORS = "stats.safetensors"
STATS_JSON = "stats.json"
RESIDUAL_WRITERS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
                    "hook_embed", "hook_pos_embed")


@dataclass
class FeatureStats:
    """Statistics of every latent: `tensors` (see `FeatureAccumulator.tensors` plus logit_* and
    neighbour_*), `meta` (what was measured and how) and `vocab` (token id -> string, untrusted text)."""

    tensors: dict[str, torch.Tensor]
    meta: dict
    vocab: dict[int, str]

    @property
    def d_dict(self) -> int:
        return self.meta["d_dict"]

    @property
    def density(self) -> torch.Tensor:
        """[d_dict] fraction of (non-BOS) tokens on which each latent fires."""
        return self.tensors["fires"].double() / max(1, self.meta["tokens_seen"])

    @property
    def mean_act(self) -> torch.Tensor:
        return self.tensors["act_sum"] / self.tensors["fires"].clamp_min(1)

    def token(self, i: int) -> str:
        """The string of token id `i` ('' for padding outside a context)."""
        return "" if i < 0 else self.vocab.get(int(i), f"<{int(i)}>")

    def top_tokens(self, latent: int, n: int = 5) -> list[tuple[str, int]]:
        """The most frequent activating tokens among a latent's top contexts, with counts."""
        filled = self.tensors["top_value"][latent] > 0
        ids = self.tensors["top_tokens"][latent, filled, self.meta["left"]].tolist()
        counts = {}
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
        return [(self.token(i), c) for i, c in sorted(counts.items(), key=lambda kv: -kv[1])[:n]]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (STATS_TENSORS + ".tmp")
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, tmp, metadata={"format": "interp-features"})
        tmp.replace(folder / STATS_TENSORS)
        doc = {"meta": self.meta, "vocab": {str(k): v for k, v in sorted(self.vocab.items())}}
        write_atomic_text(folder / STATS_JSON, json.dumps(doc, indent=1))
        return folder

    @staticmethod
    def load(folder: str | Path) -> FeatureStats:
        folder = Path(folder)
        if not (folder / STATS_JSON).exists():
            raise FileNotFoundError(f"{folder} has no {STATS_JSON}; compute it with `interp features RUN_DIR --out DIR`.")
        doc = json.loads((folder / STATS_JSON).read_text())
        return FeatureStats(load_file(folder / STATS_TENSORS), doc["meta"], {int(k): v for k, v in doc["vocab"].items()})


def _stop_layer(model, hooks: list[str]) -> int | None:
    """Blocks to run before every hook in `hooks` has fired (None: the whole model)."""
    layers = []
    for h in hooks:
        if h.startswith("blocks."):
            layers.append(hook_layer(h) + 1)
        elif h in ("hook_embed", "hook_pos_embed"):
            layers.append(0)
        else:
            return None
    return max(layers) if max(layers) < model.cfg.n_layers else None


def _batches(model, source, split, n_ctx, contexts, batch_size, tokens):
    if tokens is not None:
        yield from tokens[:contexts].split(batch_size)
        return
    stream = itertools.islice(iter_contexts(model, source, split, n_ctx), contexts)
    while chunk := list(itertools.islice(stream, batch_size)):
        yield torch.stack(chunk)


@torch.no_grad()
def mean_final_scale(model, tokens: torch.Tensor) -> float:
    """Mean of the final norm's scale (`ln_final.hook_scale`) over non-BOS positions of tokens [batch, pos]; 1 without one."""
    if "ln_final.hook_scale" not in model.hook_dict:
        return 1.0
    _, cache = model.run_with_cache(tokens, names_filter="ln_final.hook_scale")
    return cache["ln_final.hook_scale"][..., 0][token_mask(model, tokens)].double().mean().item()


@torch.no_grad()
def compute_feature_stats(model, dictionary: Dictionary, source: str = "shakespeare", split: str = "train",
                          n_ctx: int = 128, contexts: int = 512, batch_size: int = 16, tokens: torch.Tensor | None = None,
                          n_top: int = 20, bands: int = 4, per_band: int = 5, left: int = 10, right: int = 4,
                          logit_k: int = 10, neighbours: int = 8, seed: int = 0) -> FeatureStats:
    """One model pass over `contexts` contexts of `source` (or over `tokens` [n, n_ctx]) -> FeatureStats."""
    cfg = dictionary.cfg
    hook = validate_hook(model, cfg.hook_in)
    validate_hook(model, cfg.hook_out)
    is_z = hook.endswith("hook_z")
    acc = FeatureAccumulator(cfg.d_dict, n_top, bands, per_band, left, right, n_heads=model.cfg.n_heads if is_z else 0,
                             seed=seed)
    stop, dtype, device = _stop_layer(model, [hook]), dictionary.W_enc.dtype, dictionary.W_enc.device
    final_scale, seen = None, 0
    total = contexts if tokens is None else min(contexts, len(tokens))
    with tqdm(total=total, desc="feature stats", unit="ctx", leave=False) as bar:
        for batch in _batches(model, source, split, n_ctx, contexts, batch_size, tokens):
            batch = batch.to(device)
            if final_scale is None:
                final_scale = mean_final_scale(model, batch)
            _, cache = model.run_with_cache(batch, names_filter=[hook], stop_at_layer=stop)
            act = cache[hook]
            mask = token_mask(model, batch)
            x = act.reshape(-1, cfg.d_in).to(dtype)
            codes = dictionary.encode(x).reshape(*batch.shape, cfg.d_dict) * mask[..., None]
            heads = None
            if is_z:
                z = act.reshape(-1, *act.shape[2:]).to(dtype)
                heads = lambda rows, latent, z=z: head_attribution(dictionary, z[rows], latent)[0]  # noqa: E731
            acc.update(batch.cpu(), codes.cpu(), seen, n_tokens=int(mask.sum()), heads=heads)
            seen += len(batch)
            bar.update(len(batch))
    if seen == 0:
        raise ValueError(f"{source} ({split}) yielded no context of {n_ctx} tokens; use a larger source or a smaller --n-ctx.")
    tensors = acc.tensors()
    top_ids, top_vals, bottom_ids, bottom_vals = top_logits(model, dictionary, final_scale, logit_k)
    tensors |= {"logit_top_ids": top_ids, "logit_top": top_vals, "logit_bottom_ids": bottom_ids, "logit_bottom": bottom_vals}
    tensors["neighbour_ids"], tensors["neighbour_cos"] = nearest_features(dictionary, neighbours)
    meta = {"d_dict": cfg.d_dict, "hook_in": cfg.hook_in, "hook_out": cfg.hook_out, "arch": cfg.arch, "model": cfg.model,
            "source": source if tokens is None else "tokens", "split": split, "n_ctx": int(batch.shape[1]), "contexts": seen,
            "tokens_seen": acc.tokens_seen, "n_top": n_top, "bands": bands, "per_band": per_band, "left": left,
            "right": right, "final_scale": final_scale, "normalization": str(model.cfg.normalization_type),
            "n_heads": model.cfg.n_heads if is_z else 0}
    ids = torch.cat([tensors[k].flatten() for k in ("top_tokens", "sample_tokens", "logit_top_ids", "logit_bottom_ids")])
    ids = sorted(set(ids[ids >= 0].tolist()))
    return FeatureStats(tensors, meta, dict(zip(ids, decode_tokens(model, ids))))


def residual_directions(model, dictionary: Dictionary) -> torch.Tensor:
    """[d_dict, d_model]: what each latent's decoder row adds to the residual stream at `hook_out`."""
    hook, W_dec = dictionary.cfg.hook_out, dictionary.W_dec.detach()
    if hook.endswith("attn.hook_z"):
        W_O = model.blocks[hook_layer(hook)].attn.W_O.to(W_dec.dtype)  # [n_heads, d_head, d_model]
        return einops.einsum(W_dec.reshape(len(W_dec), *W_O.shape[:2]), W_O, "f h d, h d m -> f m")
    if hook.endswith("mlp.hook_post"):
        return W_dec @ model.blocks[hook_layer(hook)].mlp.W_out.to(W_dec.dtype)
    if hook.split(".")[-1] in RESIDUAL_WRITERS and W_dec.shape[1] == model.cfg.d_model:
        return W_dec
    raise ValueError(f"Cannot map decoder rows at {hook!r} into the residual stream: expected a hook writing d_model "
                     f"vectors ({', '.join(RESIDUAL_WRITERS)}), attn.hook_z or mlp.hook_post.")


def logit_effect(model, dictionary: Dictionary, final_scale: float, latents: torch.Tensor | None = None) -> torch.Tensor:
    """[len(latents), d_vocab] direct logit change per unit of each latent, final norm scale frozen at `final_scale`."""
    d = residual_directions(model, dictionary)
    d = d if latents is None else d[latents]
    W_U = model.W_U.detach()
    d = d.to(W_U.dtype)
    if str(model.cfg.normalization_type).startswith("LN"):
        d = d - d.mean(-1, keepdim=True)
    w = getattr(model.ln_final, "w", None)
    if w is not None:
        d = d * w.detach()
    return (d / final_scale) @ W_U


def top_logits(model, dictionary: Dictionary, final_scale: float, k: int = 10, chunk: int = 256):
    """(top ids, top values, bottom ids, bottom values), each [d_dict, k], computed in chunks of latents."""
    out = [[], [], [], []]
    for latents in torch.arange(dictionary.d_dict).split(chunk):
        eff = logit_effect(model, dictionary, final_scale, latents).float().cpu()
        hi, lo = eff.topk(k, dim=1), eff.topk(k, dim=1, largest=False)
        for lst, t in zip(out, (hi.indices, hi.values, lo.indices, lo.values)):
            lst.append(t)
    return tuple(torch.cat(t) for t in out)


def nearest_features(dictionary: Dictionary, k: int = 8, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, cosines), each [d_dict, k]: the latents whose decoder rows are closest in cosine (self excluded)."""
    W = dictionary.W_dec.detach().float()
    W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    k = min(k, len(W) - 1)
    ids, cos = [], []
    for start in range(0, len(W), chunk):
        sim = W[start:start + chunk] @ W.T
        sim[torch.arange(len(sim)), torch.arange(start, start + len(sim))] = -2.0
        top = sim.topk(k, dim=1)
        ids.append(top.indices.cpu())
        cos.append(top.values.cpu())
    return torch.cat(ids), torch.cat(cos)
