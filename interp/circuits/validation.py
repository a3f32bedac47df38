"""Circuit validation: ablate a graph's most influential feature nodes (one at a time, and the top
2, 4, 8, ... together) and compare the change of every logit the graph predicts with the change
measured in the real model.

Prediction (the graph's linear world): a feature's edges divided by its activation are its per-unit
direct effects. Ablating a set S clamps those features to zero (change -activation); every other
feature of the graph responds linearly (change of its pre-activation = change of its activation, the
regime of TopK / JumpReLU features that stay active), error nodes and tokens are fixed; logits move by
the sum of the per-unit effects times the changes ("predicted"; "predicted_direct" keeps only the
direct edges from S). Both are changes of demeaned logits (logit minus mean logit), like the graph's values.

Measurement: by default in the real model (error terms included, attention and norms recomputed, real
MLPs downstream), ablating the feature's code in its transcoder at its position; candidates are batched,
each batch running once through the layers after its earliest intervened layer (`start_at_layer`), not one
full forward per node. `attention="frozen"` measures instead in the local replacement model with frozen
attention and norms and free downstream transcoders.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from interp.circuits.graph import AttributionGraph
from interp.interventions import Intervention, dictionary_hooks
from interp.interventions.spec import edit_codes


def validate(model, transcoders: dict, graph: AttributionGraph, n_nodes: int = 16, batch_size: int = 16,
             attention: str = "recomputed", progress: bool = True) -> dict:
    """JSON-ready validation of `graph` (see the module docstring): per candidate the predicted and measured
    change of each logit, and over (single node, logit) pairs the Pearson correlation and sign agreement."""
    start = time.perf_counter()
    if n_nodes < 1 or graph.n_features == 0:
        raise ValueError(f"Validation needs at least one feature node; the graph has {graph.n_features}, asked {n_nodes}.")
    top = graph.influence[: graph.n_features].argsort(descending=True)[:n_nodes].tolist()
    sizes = [2**j for j in range(1, len(top).bit_length()) if 2**j <= len(top)]
    sets = [[i] for i in top] + [top[:m] for m in sizes]
    predicted, direct = predicted_changes(graph, sets)
    measured = measured_changes(model, transcoders, graph, sets, batch_size, attention, progress)
    rows = [{"ids": [graph.node(i)["id"] for i in s], "predicted": p.tolist(), "predicted_direct": d.tolist(),
             "measured": m.tolist()} for s, p, d, m in zip(sets, predicted, direct, measured)]
    singles = slice(0, len(top))
    return {"attention": attention, "n_nodes": len(top), "logit_tokens": graph.logit_tokens,
            "logit_strings": graph.logit_strings, "nodes": rows[singles], "groups": rows[len(top):],
            **agreement(predicted[singles], measured[singles]), "seconds": round(time.perf_counter() - start, 3)}


def agreement(predicted: torch.Tensor, measured: torch.Tensor) -> dict:
    """Pearson correlation (None if undefined) and the fraction of pairs with the same sign."""
    p, m = predicted.flatten().double(), measured.flatten().double()
    pc, mc = p - p.mean(), m - m.mean()
    denominator = (pc.norm() * mc.norm()).item()
    correlation = (pc @ mc).item() / denominator if len(p) > 1 and denominator > 0 else None
    return {"correlation": correlation, "sign_agreement": (p.sign() == m.sign()).double().mean().item()}


def predicted_changes(graph: AttributionGraph, sets: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(total, direct) [len(sets), n_logits]: the graph's predicted change of each demeaned logit when the
    features in each set (indices of feature nodes) are ablated."""
    nf = graph.n_features
    per_unit = graph.adjacency[:, :nf].double() / graph.activations.double()[None]  # [n, nf]
    clamp = torch.zeros(nf, len(sets), dtype=torch.bool)
    start = torch.zeros(nf, len(sets), dtype=torch.float64)
    for j, members in enumerate(sets):
        clamp[members, j] = True
        start[members, j] = -graph.activations[members].double()
    change = start
    for _ in range(graph.n_layers):  # features only read earlier layers: n_layers steps reach a fixed point
        change = torch.where(clamp, start, per_unit[:nf] @ change)
    to_logits = per_unit[graph.logit_nodes()]
    return (to_logits @ change).T.float(), (to_logits @ start).T.float()


@torch.no_grad()
def measured_changes(model, transcoders: dict, graph: AttributionGraph, sets: list[list[int]], batch_size: int = 16,
                     attention: str = "recomputed", progress: bool = False) -> torch.Tensor:
    """[len(sets), n_logits] the change of each demeaned logit at the last position when each set is ablated."""
    if attention not in ("recomputed", "frozen"):
        raise ValueError(f"attention must be 'recomputed' (the real model) or 'frozen'; got {attention!r}.")
    tokens = torch.tensor(graph.tokens, device=model.cfg.device)[None]
    nodes = [[tuple(graph.features[i].tolist()) for i in s] for s in sets]
    order = sorted(range(len(sets)), key=lambda j: min(layer for layer, _, _ in nodes[j]))
    run = _frozen_runner(model, transcoders, tokens) if attention == "frozen" else _real_runner(model, transcoders, tokens)
    logit_ids = torch.tensor(graph.logit_tokens)
    clean = _demeaned_last(model(tokens))[0, logit_ids]
    out = torch.zeros(len(sets), len(logit_ids))
    for chunk in tqdm([order[i : i + batch_size] for i in range(0, len(order), batch_size)], desc="validation",
                      unit="batch", disable=not progress):
        out[chunk] = _demeaned_last(run([nodes[j] for j in chunk]))[:, logit_ids] - clean
    return out


def _rows(transcoders, nodes):
    return [[Intervention.ablate(transcoders[layer], latent, where=pos) for layer, pos, latent in members]
            for members in nodes]


def _real_runner(model, transcoders, tokens):
    """Batches of ablations in the real model, each from the residual stream before its earliest layer."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_pre"))

    def run(nodes):
        rows = _rows(transcoders, nodes)
        first = min(layer for members in nodes for layer, _, _ in members)
        hooks = []
        for layer in sorted({layer for members in nodes for layer, _, _ in members}):
            layer_rows = [[iv for iv in row if iv.dictionary is transcoders[layer]] for row in rows]
            hooks += dictionary_hooks(model, transcoders[layer], edit_codes(layer_rows, tokens.shape[1]))
        resid = cache[f"blocks.{first}.hook_resid_pre"].expand(len(nodes), -1, -1)
        with model.hooks(fwd_hooks=hooks):
            return model(resid, start_at_layer=first)

    return run


def _frozen_runner(model, transcoders, tokens):
    from interp.circuits.replacement import LocalReplacement

    rep = LocalReplacement(model, transcoders, tokens)
    return lambda nodes: rep.intervene(_rows(transcoders, nodes), "frozen", "free")


def _demeaned_last(logits: torch.Tensor) -> torch.Tensor:
    last = logits[:, -1].float().cpu()
    return last - last.mean(-1, keepdim=True)


def summary(validation: dict) -> str:
    """One line: how many nodes, correlation, sign agreement, time."""
    r = validation["correlation"]
    return (f"validated {validation['n_nodes']} nodes ({validation['attention']} attention) in "
            f"{validation['seconds']:.1f} s: correlation {'undefined' if r is None else f'{r:.3f}'}, "
            f"same sign {validation['sign_agreement']:.0%}")
