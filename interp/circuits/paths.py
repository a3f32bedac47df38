"""Greedy top-path search (Dunefsky et al., 2024) on an attribution graph: the
paths from the sources (tokens, error nodes) to a node that carry the most of
its input, found by a beam search backwards through the edges.

A path's score is the product of its edges' shares of their targets' input
(rows of the normalised adjacency), so the scores of all paths into a node
sum to at most 1.
"""

from __future__ import annotations

from dataclasses import dataclass


from interp.circuits.graph import AttributionGraph
from interp.circuits.pruning import normalize_rows


@dataclass(frozen=True)
class Path:
    nodes: tuple[int, ...]  # source first, the searched node last
    score: float  # product of the edges' shares of their targets' input


def top_paths(graph: AttributionGraph, node: int, k: int = 5, depth: int = 6) -> list[Path]:
    """The `k` highest-scoring paths into `node`, each at most `depth` edges long, best first."""
    if not 0 <= node < len(graph.adjacency):
        raise ValueError(f"node {node} is not in the graph (0..{len(graph.adjacency) - 1}).")
    shares = normalize_rows(graph.adjacency)
    beam = [Path((node,), 1.0)]
    finished: list[Path] = []
    for _ in range(depth):
        grown = []
        for path in beam:
            head = path.nodes[0]
            row = shares[head]
            if not row.any():  # a source: the path is complete
                finished.append(path)
                continue
            values, sources = row.topk(min(k, int((row > 0).sum())))
            grown += [Path((s, *path.nodes), path.score * v) for v, s in zip(values.tolist(), sources.tolist())]
        beam = sorted(grown, key=lambda p: -p.score)[:k]
        if not beam:
            break
    return sorted(finished + beam, key=lambda p: -p.score)[:k]


def describe(graph: AttributionGraph, path: Path) -> str:
    """A one-line description: 'token/3 ' Mary' -> feature/2/3/17 -> ... (score 0.12)'."""
    parts = []
    for i in path.nodes:
        node = graph.node(i)
        parts.append(f"{node['id']} {node['token']!r}" if "token" in node else node["id"])
    return " -> ".join(parts) + f" (score {path.score:.3g})"
