"""Attribution graphs: from a prompt to the pruned graph of direct effects
between transcoder features, error nodes, token embeddings and output logits
in the prompt's local replacement model (`interp.circuits.replacement`).

Node order in `AttributionGraph.adjacency` (rows are targets, columns sources):
  selected features (layer, position, latent) | error nodes (layer-major) |
  token embeddings (one per position) | logits (most probable first).
Features are selected by influence on the logits: logit rows come first, then
the most influential not-yet-expanded features are expanded in batches until
`max_feature_nodes`; features never expanded are left out of the graph.

`AttributionGraph.save_json` writes the graph in the schema documented in
`interp/circuits/graph.schema.json` (version "interp.attribution-graph/1").
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from interp.circuits import pruning
from interp.circuits.replacement import LocalReplacement, Target
from interp.config import write_atomic_text
from interp.dictionary import Dictionary
from interp.errors import UserError
from interp.model import bos_token_id, decode_tokens, encode_text

SCHEMA = "interp.attribution-graph/1"


@dataclass
class AttributionGraph:
    prompt: str
    tokens: list[int]
    token_strings: list[str]
    n_layers: int
    features: torch.Tensor  # [n_features, 3] (layer, position, latent)
    activations: torch.Tensor  # [n_features]
    logit_tokens: list[int]
    logit_strings: list[str]
    logit_probabilities: torch.Tensor  # [n_logits]
    adjacency: torch.Tensor  # [n, n] direct effects, rows targets, columns sources
    values: torch.Tensor  # [n] each node's value: pre-activation, demeaned logit (0 for sources)
    biases: torch.Tensor  # [n] the part of each value no source explains
    node_mask: torch.Tensor = None  # [n] kept by pruning
    edge_mask: torch.Tensor = None  # [n, n]
    influence: torch.Tensor = None  # [n] on the logits, before pruning
    scores: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)  # interp.circuits.validation.validate(...), if run

    # --- node layout -----------------------------------------------------------
    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return len(self.features)

    def error_nodes(self) -> torch.Tensor:
        start = self.n_features
        return torch.arange(start, start + self.n_layers * self.n_pos)

    def token_nodes(self) -> torch.Tensor:
        start = self.n_features + self.n_layers * self.n_pos
        return torch.arange(start, start + self.n_pos)

    def logit_nodes(self) -> torch.Tensor:
        start = self.n_features + (self.n_layers + 1) * self.n_pos
        return torch.arange(start, start + len(self.logit_tokens))

    def logit_weights(self) -> torch.Tensor:
        w = torch.zeros(len(self.adjacency))
        w[self.logit_nodes()] = self.logit_probabilities
        return w

    def node(self, i: int) -> dict:
        """A JSON-ready description of node `i`."""
        n_err = self.n_layers * self.n_pos
        if i < self.n_features:
            layer, pos, latent = self.features[i].tolist()
            return {"id": f"feature/{layer}/{pos}/{latent}", "kind": "feature", "layer": layer, "position": pos,
                    "latent": latent, "activation": self.activations[i].item()}
        if i < self.n_features + n_err:
            layer, pos = divmod(i - self.n_features, self.n_pos)
            return {"id": f"error/{layer}/{pos}", "kind": "error", "layer": layer, "position": pos}
        if i < self.n_features + n_err + self.n_pos:
            pos = i - self.n_features - n_err
            return {"id": f"token/{pos}", "kind": "token", "layer": -1, "position": pos, "token_id": self.tokens[pos],
                    "token": self.token_strings[pos]}
        j = i - self.n_features - n_err - self.n_pos
        return {"id": f"logit/{self.logit_tokens[j]}", "kind": "logit", "layer": self.n_layers, "position": self.n_pos - 1,
                "token_id": self.logit_tokens[j], "token": self.logit_strings[j],
                "probability": self.logit_probabilities[j].item()}

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> AttributionGraph:
        keep = torch.zeros(len(self.adjacency), dtype=torch.bool)
        keep[self.token_nodes()] = keep[self.logit_nodes()] = True
        self.node_mask, self.edge_mask, self.influence = pruning.prune(self.adjacency, self.logit_weights(), keep,
                                                               node_threshold, edge_threshold)
        self.scores = pruning.graph_scores(self.adjacency, self.logit_weights(), self.error_nodes(), self.token_nodes())
        self.meta.update(node_threshold=node_threshold, edge_threshold=edge_threshold)
        return self

    # --- JSON --------------------------------------------------------------------
    def to_json(self) -> dict:
        """The pruned graph (every node, with a `kept` flag; the kept edges) as plain JSON data."""
        if self.node_mask is None:
            self.prune()
        nodes = []
        for i in range(len(self.adjacency)):
            node = self.node(i)
            node.update(value=self.values[i].item(), bias=self.biases[i].item(), influence=self.influence[i].item(),
                        kept=bool(self.node_mask[i]))
            nodes.append(node)
        targets, sources = self.edge_mask.nonzero(as_tuple=True)
        edges = [{"source": nodes[s]["id"], "target": nodes[t]["id"], "weight": self.adjacency[t, s].item()}
                 for t, s in zip(targets.tolist(), sources.tolist())]
        return {"schema": SCHEMA, "prompt": self.prompt, "tokens": self.tokens, "token_strings": self.token_strings,
                "n_layers": self.n_layers, "scores": self.scores, "meta": self.meta, "nodes": nodes, "edges": edges,
                **({"validation": self.validation} if self.validation else {})}

    def save_json(self, path: str | Path) -> Path:
        write_atomic_text(Path(path), json.dumps(self.to_json(), indent=1))
        return Path(path)


def prompt_tokens(model, prompt: str) -> torch.Tensor:
    """BOS followed by the prompt's tokens."""
    ids = encode_text(model, prompt)
    if not ids:
        raise ValueError("The prompt is empty.")
    return torch.tensor([bos_token_id(model), *ids])


def target_token(model, target: str) -> int:
    ids = encode_text(model, target)
    if len(ids) != 1:
        pieces = decode_tokens(model, ids)
        raise ValueError(f"--target must be exactly one token; {target!r} is {len(ids)} tokens {pieces}. "
                         "Include a leading space if the token is a word after a space (e.g. ' Paris').")
    return ids[0]


def logit_targets(logits: torch.Tensor, target: int | None, max_logits: int, probability: float) -> tuple[list[int], torch.Tensor]:
    """The most probable next tokens covering `probability` (at most `max_logits`), plus `target`."""
    probs = logits.float().softmax(-1)
    top = probs.topk(max_logits)
    n = int(torch.searchsorted(top.values.cumsum(0), probability)) + 1
    ids = top.indices[: min(n, max_logits)].tolist()
    if target is not None and target not in ids:
        ids.append(target)
    return ids, probs[ids].cpu()


def attribute(model, transcoders: dict[int, Dictionary], prompt: str, target: str | None = None, max_logits: int = 10,
              logit_probability: float = 0.95, max_feature_nodes: int = 1024, batch_size: int = 64,
              node_threshold: float = 0.8, edge_threshold: float = 0.98, progress: bool = True) -> AttributionGraph:
    """The pruned attribution graph of `prompt`'s next-token prediction (see the module docstring)."""
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size} (--batch-size): expected at least 1 feature per batch.")
    start = time.perf_counter()
    tokens = prompt_tokens(model, prompt).to(model.cfg.device)
    replacement = LocalReplacement(model, transcoders, tokens)
    last = len(tokens) - 1
    logit_ids, logit_probs = logit_targets(replacement.logits[last], None if target is None else target_token(model, target),
                                           max_logits, logit_probability)
    active = replacement.active_features()
    n_layers, n_pos, n_active = model.cfg.n_layers, len(tokens), len(active)
    n_sources = n_active + (n_layers + 1) * n_pos
    logit_rows = [Target("logit", n_layers, last, t) for t in logit_ids]
    logit_nodes = torch.arange(n_sources, n_sources + len(logit_ids))
    weights = torch.cat([torch.zeros(n_sources), logit_probs / logit_probs.sum()])
    blocks = [replacement.edges(logit_rows, active)]  # [targets, sources]: the logits, then expanded features
    expanded: list[int] = []
    budget = min(max_feature_nodes, n_active)
    bar = tqdm(total=budget, desc="attribution", unit="feature", disable=not progress)
    while len(expanded) < budget:
        partial = pruning.normalize_rows(torch.cat(blocks))
        partial = torch.cat([partial, torch.zeros(len(partial), len(logit_ids))], 1)
        scores = pruning.influence(partial, weights, torch.cat([logit_nodes, torch.tensor(expanded, dtype=torch.long)]))[:n_active]
        scores[expanded] = -1
        batch = scores.topk(min(batch_size, budget - len(expanded))).indices.tolist()
        blocks.append(replacement.edges([Target("feature", *active[i].tolist()) for i in batch], active))
        expanded += batch
        bar.update(len(batch))
    bar.close()
    graph = _assemble(model, prompt, replacement, active, expanded, torch.cat(blocks), logit_rows, logit_probs)
    graph.meta.update(model=getattr(model, "spec", ""), active_features=n_active, max_feature_nodes=max_feature_nodes,
                      seconds=round(time.perf_counter() - start, 3))
    return graph.prune(node_threshold, edge_threshold)


def _assemble(model, prompt, replacement: LocalReplacement, active, expanded, rows, logit_rows, logit_probs):
    """The square graph over selected features, error nodes, tokens and logits from the computed rows."""
    n_logits, n_active = len(logit_rows), len(active)
    order = sorted(range(len(expanded)), key=lambda j: expanded[j])  # features in (layer, position, latent) order
    selected = [expanded[j] for j in order]
    columns = torch.cat([torch.tensor(selected, dtype=torch.long), torch.arange(n_active, rows.shape[1])])
    feature_rows = rows[n_logits:][order][:, columns]
    n = len(selected) + rows.shape[1] - n_active + n_logits
    adjacency = torch.zeros(n, n)
    adjacency[: len(selected), : len(columns)] = feature_rows
    adjacency[n - n_logits :, : len(columns)] = rows[:n_logits][:, columns]
    targets = [Target("feature", *active[i].tolist()) for i in selected]
    values, biases = torch.zeros(n), torch.zeros(n)
    for node, t in zip([*range(len(selected)), *range(n - n_logits, n)], targets + logit_rows):
        values[node], biases[node] = replacement.value(t), replacement.bias(t)
    tokens = replacement.tokens[0].tolist()
    features = active[selected] if selected else torch.zeros(0, 3, dtype=torch.long)
    logit_ids = [t.index for t in logit_rows]
    return AttributionGraph(prompt=prompt, tokens=tokens, token_strings=decode_tokens(model, tokens),
                            n_layers=model.cfg.n_layers, features=features, activations=replacement.activations(features),
                            logit_tokens=logit_ids, logit_strings=decode_tokens(model, logit_ids),
                            logit_probabilities=logit_probs, adjacency=adjacency, values=values, biases=biases)
