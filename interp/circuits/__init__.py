"""Circuits through transcoders: attribution graphs on a prompt's local
replacement model (`graph`, `replacement`), their pruning and scores
(`pruning`), greedy top paths (`paths`), the input-invariant analysis of
Dunefsky et al. (`transcoder_circuits`) and the data of the HTML report
(`report`; `write_report` renders it through `interp.viz.circuit_report`)."""

from interp.circuits.graph import AttributionGraph, attribute
from interp.circuits.paths import top_paths
from interp.circuits.replacement import LocalReplacement, Target

__all__ = ["AttributionGraph", "LocalReplacement", "Target", "attribute", "top_paths", "write_report"]


def __getattr__(name: str):
    if name == "write_report":  # lazily: rendering pulls in plotly and jinja2
        from interp.viz.circuit_report import write_report

        return write_report
    raise AttributeError(f"module 'interp.circuits' has no attribute {name!r}")
