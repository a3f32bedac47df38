"""The replacement model measured as a whole: every MLP replaced at once by its
transcoder, no error terms, so each transcoder reads the inputs the earlier
transcoders produced (errors compound, unlike one splice at a time).

`transcoders` is {layer: transcoder}: per-layer transcoders, skip transcoders,
or a cross-layer transcoder's per-layer views (`CrossLayerTranscoder.layer_transcoders()`,
whose `W_dec_cross` makes layer l's features also write to later MLP outputs;
`interp.circuits.replacement.decoders` lists every write). MLPs of layers
without a transcoder run as usual. BOS positions keep their real MLP output,
as in every splice here, and are not scored.

Reported: CE of the clean model, of the replacement model and with those MLPs
zero-ablated, CE recovered, KL(clean || replacement) per prediction, and each
layer's FVU of its MLP output reconstructed from the clean model's MLP inputs
(for a CLT: the sum of every earlier layer's writes to it).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from interp.analysis.evals import _Predictions
from interp.circuits.replacement import decoders
from interp.data.tokens import token_mask
from interp.dictionary import Dictionary
from interp.hooks import replace_hooks


def mlp_names(layer: int) -> tuple[str, str]:
    return f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"


def replaced_outputs(transcoders: dict[int, Dictionary], inputs: dict[int, torch.Tensor], codes: dict[int, torch.Tensor],
                     layer: int) -> torch.Tensor:
    """[..., d_model] the replacement of MLP `layer`'s output from the MLP inputs [..., d_model] of layers <= layer;
    `codes` caches each layer's codes [..., d_dict] (filled as needed)."""
    tc = transcoders[layer]
    out = tc.b_dec.float() + (tc.skip(inputs[layer].to(tc.W_enc.dtype)).float() if tc.cfg.skip else 0.0)
    for source in (s for s in transcoders if s <= layer):
        W = decoders(transcoders, source).get(layer)
        if W is not None:
            if source not in codes:
                src = transcoders[source]
                codes[source] = src.encode(inputs[source].to(src.W_enc.dtype)).float()
            out = out + codes[source] @ W
    return out


def replacement_hooks(transcoders: dict[int, Dictionary], mask: torch.Tensor | None = None):
    """fwd_hooks replacing every MLP output that has a transcoder; mask [batch, pos] is True where to replace."""
    inputs: dict[int, torch.Tensor] = {}
    codes: dict[int, torch.Tensor] = {}

    def read(act, hook, layer):
        inputs[layer] = act
        codes.pop(layer, None)
        return act

    def write(act, hook, layer):
        out = replaced_outputs(transcoders, inputs, codes, layer).to(act.dtype)
        return out if mask is None else torch.where(mask[..., None], out, act)

    hooks = []
    for layer in sorted(transcoders):
        name_in, name_out = mlp_names(layer)
        hooks += [(name_in, lambda a, hook, l=layer: read(a, hook, l)), (name_out, lambda a, hook, l=layer: write(a, hook, l))]
    return hooks


@torch.no_grad()
def evaluate_replacement(model, transcoders: dict[int, Dictionary], tokens: torch.Tensor, batch_size: int = 8) -> dict:
    """Metrics of the all-MLPs-replaced model on `tokens` [n, n_ctx] (see the module docstring)."""
    layers = sorted(transcoders)
    ce = {"clean": 0.0, "replaced": 0.0, "zero": 0.0}
    kl, predictions = 0.0, 0
    sq_err = {l: 0.0 for l in layers}
    sq_y, sum_y, n_tok = ({l: 0.0 for l in layers}, {l: 0.0 for l in layers}, 0)
    device = next(iter(transcoders.values())).W_enc.device
    for chunk in tqdm(tokens.split(batch_size), desc="eval replacement", unit="batch", leave=False):
        chunk = chunk.to(device)
        mask = token_mask(model, chunk)
        rows = _Predictions(model, chunk)
        names = [n for l in layers for n in mlp_names(l)]
        clean, cache = model.run_with_cache(chunk, names_filter=names)
        acts, codes = {l: cache[mlp_names(l)[0]][mask] for l in layers}, {}
        for l in layers:  # per-layer reconstruction from the clean inputs
            y = cache[mlp_names(l)[1]][mask].double()
            err = replaced_outputs(transcoders, acts, codes, l).double() - y
            sq_err[l] += err.pow(2).sum().item()
            sq_y[l] += y.pow(2).sum().item()
            sum_y[l] = sum_y[l] + y.sum(0)
        n_tok += int(mask.sum())
        zero = [h for l in layers for h in replace_hooks(mlp_names(l)[1], torch.zeros_like, mask)]
        ce_replaced, kl_sum = rows.ce_kl(clean, model.run_with_hooks(chunk, fwd_hooks=replacement_hooks(transcoders, mask)))
        ce["clean"] += rows.ce(clean)
        ce["replaced"] += ce_replaced
        ce["zero"] += rows.ce(model.run_with_hooks(chunk, fwd_hooks=zero))
        kl += kl_sum
        predictions += rows.n
    ce = {k: v / predictions for k, v in ce.items()}
    fvu = {l: sq_err[l] / (sq_y[l] - sum_y[l].pow(2).sum().item() / n_tok) for l in layers}
    return {"ce_loss_clean": ce["clean"], "ce_loss_replaced": ce["replaced"], "ce_loss_zero_ablation": ce["zero"],
            "ce_recovered": (ce["zero"] - ce["replaced"]) / (ce["zero"] - ce["clean"]), "kl_replaced": kl / predictions,
            "fvu_per_layer": fvu, "fvu_mean": sum(fvu.values()) / len(fvu), "layers": layers, "eval_tokens": n_tok,
            "predictions": predictions}
