"""Influence, pruning and scores of attribution graphs (Ameisen et al., 2025).

An adjacency matrix A [n, n] holds direct effects, A[target, source]. Its rows
normalised to fractions of absolute input, N = |A| / row sums, give each
node's share of its target's input; the influence of a node on the output is
the logit-probability-weighted sum over all paths, w (N + N^2 + ...), a finite
series because the graph is acyclic. Pruning keeps the nodes carrying a given
fraction of the total influence, then the edges likewise.
"""

from __future__ import annotations

import torch


def normalize_rows(adjacency: torch.Tensor) -> torch.Tensor:
    """|A| with every non-zero row scaled to sum to 1."""
    a = adjacency.abs()
    return a / a.sum(1, keepdim=True).clamp_min(1e-30)


def influence(normalized: torch.Tensor, weights: torch.Tensor, row_nodes: torch.Tensor | None = None) -> torch.Tensor:
    """weights @ (N + N^2 + ...) for an acyclic N. With `row_nodes`, `normalized` holds only the rows of
    those nodes (a partially expanded graph, [len(row_nodes), n]) and `weights` is over all n nodes."""
    row_nodes = torch.arange(normalized.shape[0]) if row_nodes is None else row_nodes
    total = torch.zeros(normalized.shape[1], dtype=normalized.dtype)
    current = weights.to(normalized.dtype)
    for _ in range(normalized.shape[1] + 1):
        current = current[row_nodes] @ normalized
        if not current.any():
            return total
        total += current
    raise ValueError("The adjacency matrix has a cycle; attribution graphs are acyclic.")


def cumulative_threshold(scores: torch.Tensor, fraction: float) -> float:
    """The smallest score among the largest ones that together hold `fraction` of the total."""
    ordered = scores.flatten().sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum().clamp_min(1e-30)
    return ordered[min(int(torch.searchsorted(cumulative, fraction)), len(ordered) - 1)].item()


def prune(adjacency: torch.Tensor, logit_weights: torch.Tensor, always_keep: torch.Tensor,
          node_threshold: float = 0.8, edge_threshold: float = 0.98) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(node_mask [n], edge_mask [n, n], node influence [n]).

    Nodes are kept by cumulative influence on the logits (`always_keep`, e.g. tokens and logits, stay);
    edges of the kept subgraph by cumulative edge influence (normalised weight times the influence of the
    target, logits counting by their weight). Nodes left without outgoing edges (or, if they have
    inputs at all, without incoming ones) are then dropped until nothing changes.
    """
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}.")
    node_influence = influence(normalize_rows(adjacency), logit_weights)
    node_mask = (node_influence >= cumulative_threshold(node_influence, node_threshold)) | always_keep
    kept = adjacency * node_mask[:, None] * node_mask[None, :]
    normalized = normalize_rows(kept)
    edge_scores = normalized * (influence(normalized, logit_weights) + logit_weights)[:, None]
    edge_mask = (edge_scores >= cumulative_threshold(edge_scores, edge_threshold)) & (kept != 0)
    has_inputs = adjacency.abs().sum(1) > 0
    while True:
        edge_mask &= node_mask[:, None] & node_mask[None, :]
        alive = always_keep | (edge_mask.any(0) & (edge_mask.any(1) | ~has_inputs))
        if (alive == node_mask).all():
            return node_mask, edge_mask, node_influence
        node_mask = alive


def graph_scores(adjacency: torch.Tensor, logit_weights: torch.Tensor, error_nodes: torch.Tensor,
                 token_nodes: torch.Tensor) -> dict[str, float]:
    """Replacement score: the share of token-to-logit influence that does not pass through error nodes,
    token influence / (token + error influence). Completeness score: the influence-weighted share of
    every node's input that comes from non-error nodes (logits weighted by their probability)."""
    normalized = normalize_rows(adjacency)
    node_influence = influence(normalized, logit_weights)
    tokens, errors = node_influence[token_nodes].sum(), node_influence[error_nodes].sum()
    non_error = 1 - normalized[:, error_nodes].sum(1)
    weight = node_influence + logit_weights
    return {"replacement": (tokens / (tokens + errors).clamp_min(1e-30)).item(),
            "completeness": ((non_error * weight).sum() / weight.sum()).item()}
