"""Circuits through transcoders: attribution graphs on a prompt's local
replacement model (`graph`, `replacement`), their pruning and scores
(`pruning`), greedy top paths (`paths`), the input-invariant analysis of
Dunefsky et al. (`transcoder_circuits`) and the HTML report (`report`)."""

from interp.circuits.graph import AttributionGraph, attribute
from interp.circuits.paths import top_paths
from interp.circuits.replacement import LocalReplacement, Target
from interp.circuits.report import write_report

__all__ = ["AttributionGraph", "LocalReplacement", "Target", "attribute", "top_paths", "write_report"]
