"""Top activating contexts of a few transcoder features, from one model pass
over corpus tokens: what a circuit report shows when a node is clicked."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from interp.data.tokens import token_mask
from interp.dictionary import Dictionary
from interp.model import decode_tokens


@torch.no_grad()
def top_contexts(model, transcoders: dict[int, Dictionary], features: list[tuple[int, int]], tokens: torch.Tensor,
                 k: int = 5, window: int = 8, batch: int = 16, progress: bool = False) -> dict[tuple[int, int], list[dict]]:
    """For each (layer, latent): its `k` largest activations over `tokens` [n, n_ctx] (BOS excluded), each as
    {"value", "tokens" (strings from `window` tokens before the hit to 2 after), "acts", "centre" (the hit's index)}."""
    if not features:
        return {}
    layers = sorted({layer for layer, _ in features})
    wanted = {layer: torch.tensor([f for l, f in features if l == layer]) for layer in layers}
    names = {f"blocks.{layer}.ln2.hook_normalized": layer for layer in layers}
    acts = {layer: [] for layer in layers}  # [n, n_ctx, n_wanted] per layer
    for chunk in tqdm(tokens.split(batch), desc="contexts", disable=not progress):
        chunk = chunk.to(model.cfg.device)
        _, cache = model.run_with_cache(chunk, names_filter=lambda n: n in names, stop_at_layer=layers[-1] + 1)
        mask = token_mask(model, chunk)
        for name, layer in names.items():
            tc = transcoders[layer]
            codes = tc.encode(cache[name].flatten(0, 1).to(tc.W_enc.dtype))[:, wanted[layer]].float()
            acts[layer].append((codes.reshape(*chunk.shape, -1) * mask[..., None]).cpu())
    out = {}
    for layer in layers:
        a = torch.cat(acts[layer])
        for j, latent in enumerate(wanted[layer].tolist()):
            values, flat = a[..., j].flatten().topk(min(k, a[..., j].numel()))
            out[(layer, latent)] = [_window(model, tokens, a[..., j], v, f, window)
                                    for v, f in zip(values.tolist(), flat.tolist()) if v > 0]
    return out


def _window(model, tokens, acts, value, flat, window):
    row, pos = divmod(flat, tokens.shape[1])
    lo, hi = max(0, pos - window), min(tokens.shape[1], pos + 3)
    return {"value": value, "tokens": decode_tokens(model, tokens[row, lo:hi].tolist()),
            "acts": [round(x, 4) for x in acts[row, lo:hi].tolist()], "centre": pos - lo}
