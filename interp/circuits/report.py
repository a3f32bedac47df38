"""The circuit report of an attribution graph: the graph, plus what a reader
needs to interpret its feature nodes (top activating contexts from a corpus,
the output tokens each feature promotes and suppresses)."""

from __future__ import annotations

from pathlib import Path

import torch

from interp.circuits.contexts import top_contexts
from interp.circuits.graph import AttributionGraph
from interp.circuits.transcoder_circuits import logit_effects
from interp.dictionary import Dictionary
from interp.model import decode_tokens
from interp.viz.circuit import circuit_report


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


def write_report(model, transcoders: dict[int, Dictionary], graph: AttributionGraph, path: str | Path,
                 corpus: torch.Tensor | None = None, n_contexts: int = 5, progress: bool = False) -> Path:
    """Write the self-contained HTML report of `graph`; `corpus` [n, n_ctx] tokens supply top contexts."""
    data = graph.to_json()
    kept = sorted({(n["layer"], n["latent"]) for n in data["nodes"] if n["kept"] and n["kind"] == "feature"})
    contexts = None if corpus is None else top_contexts(model, transcoders, kept, corpus, k=n_contexts, progress=progress)
    circuit_report(data, path, contexts, feature_logit_effects(model, transcoders, kept),
                   title=f"Attribution graph: {_tail(graph.prompt)}")
    return Path(path)


def _tail(text: str, n: int = 60) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1):]
