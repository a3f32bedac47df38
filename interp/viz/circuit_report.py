"""Write the self-contained circuit report of an attribution graph: `interp.circuits.report` computes what it
shows (contexts, logit effects), `interp.viz.circuit` draws and lays it out."""

from __future__ import annotations

from pathlib import Path

import torch

from interp.circuits.graph import AttributionGraph
from interp.circuits.report import report_data
from interp.dictionary import Dictionary
from interp.viz.circuit import circuit_report


def write_report(model, transcoders: dict[int, Dictionary], graph: AttributionGraph, path: str | Path,
                 corpus: torch.Tensor | None = None, n_contexts: int = 5, progress: bool = False) -> Path:
    """Write the self-contained HTML report of `graph`; `corpus` [n, n_ctx] tokens supply top contexts."""
    data = report_data(model, transcoders, graph, corpus, n_contexts, progress)
    circuit_report(path=path, title=f"Attribution graph: {_tail(graph.prompt)}", **data)
    return Path(path)


def _tail(text: str, n: int = 60) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1):]
