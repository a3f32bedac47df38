"""The data a circuit report shows beyond the graph itself, computed from the model: each kept
feature's top activating contexts in a corpus and the output tokens it promotes and suppresses.
Rendering is `interp.viz`'s: `interp.viz.circuit_report.write_report` (also `interp.circuits.write_report`)."""

from __future__ import annotations

import torch

from interp.circuits.contexts import top_contexts
from interp.circuits.graph import AttributionGraph
from interp.circuits.transcoder_circuits import logit_effects
from interp.dictionary import Dictionary
from interp.model import decode_tokens


def feature_logit_effects(model, transcoders: dict[int, Dictionary], features: list[tuple[int, int]],
                          k: int = 5) -> dict[tuple[int, int], tuple[list, list]]:
    """(layer, latent) -> (top promoted [[token, effect]], top suppressed) by direct logit effect."""
    out = {}
    for layer in sorted({layer for layer, _ in features}):
        latents = [f for l, f in features if l == layer]
        effects = logit_effects(model, transcoders[layer], torch.tensor(latents))
        for latent, row in zip(latents, effects):
            up, down = row.topk(k), (-row).topk(k)
            out[(layer, latent)] = ([[t, v] for t, v in zip(decode_tokens(model, up.indices.tolist()), up.values.tolist())],
                                    [[t, -v] for t, v in zip(decode_tokens(model, down.indices.tolist()), down.values.tolist())])
    return out


def report_data(model, transcoders: dict[int, Dictionary], graph: AttributionGraph, corpus: torch.Tensor | None = None,
                n_contexts: int = 5, progress: bool = False) -> dict:
    """{"graph_json", "contexts", "logit_effects"} for `interp.viz.circuit.circuit_report`: the graph's JSON, the
    top `n_contexts` contexts of each kept feature in `corpus` [n, n_ctx] tokens (None without a corpus), and
    each kept feature's promoted and suppressed tokens."""
    data = graph.to_json()
    kept = sorted({(n["layer"], n["latent"]) for n in data["nodes"] if n["kept"] and n["kind"] == "feature"})
    contexts = None if corpus is None else top_contexts(model, transcoders, kept, corpus, k=n_contexts, progress=progress)
    return {"graph_json": data, "contexts": contexts, "logit_effects": feature_logit_effects(model, transcoders, kept)}
