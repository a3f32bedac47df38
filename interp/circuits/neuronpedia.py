"""Attribution graphs in the JSON that circuit-tracer's frontend and Neuronpedia's graph viewer read.

The schema (`neuronpedia.schema.json` beside this file) is written down from circuit-tracer's own
writer, the circuit-tracer 0.5.0 release (safety-research/circuit-tracer): the pydantic models in
circuit_tracer/frontend/graph_models.py (Metadata with schema_version 1, QParams, Node, Model) and
create_graph_files / create_nodes / create_used_nodes_and_edges in circuit_tracer/utils/create_graph_files.py;
the slow test has that release's own `Model` parse our files and write them back unchanged. Our node
order (features | errors layer-major | tokens | logits) is theirs, so the ids line up:
  feature  "{layer}_{latent}_{pos}", feature = Cantor pairing of (layer, latent), feature_type
           "cross layer transcoder" (their name for any transcoder)
  error    "0_{layer}_{pos}", feature -1, "mlp reconstruction error"
  token    "E_{token_id}_{pos}", layer "E", "embedding"
  logit    "{n_layers + 1}_{token_id}_{pos}", "logit", with token_prob, is_target_logit (the most probable)
`influence` is circuit-tracer's cumulative score (the share of total logit influence held by nodes at
least as influential); links are the kept edges between kept nodes (source -> target, direct effect).
Their ids collide when a layer-0 feature's latent index equals an error node's layer ("0_{L}_{P}"); that is
circuit-tracer's format (also in its 0.5.0 release) and is kept as is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from interp.circuits.graph import AttributionGraph
from interp.config import write_atomic_text

SCHEMA_FILE = Path(__file__).with_name("neuronpedia.schema.json")
SCHEMA_VERSION = 1  # circuit-tracer 0.5.0's Metadata.schema_version
FEATURE_TYPE = "cross layer transcoder"  # circuit-tracer labels every transcoder feature this way


def process_token(token: str) -> str:
    """circuit-tracer's frontend/utils.py process_token: make whitespace visible."""
    return token.replace("\n", "⏎").replace("\t", "→").replace("\r", "↵")


def cumulative_scores(influence: torch.Tensor) -> torch.Tensor:
    """[n] -> [n]: each node's cumulative share of influence in descending order (circuit-tracer's prune_graph)."""
    scores, order = influence.sort(descending=True)
    out = torch.zeros_like(influence)
    out[order] = scores.cumsum(0) / scores.sum()
    return out


def cantor_pairing(x: int, y: int) -> int:
    """circuit-tracer's unique integer for a (layer, latent) pair."""
    return (x + y) * (x + y + 1) // 2 + y


def _node(graph: AttributionGraph, i: int, score: float) -> dict:
    n = graph.node(i)
    base = {"ctx_idx": n["position"], "token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0,
            "clerp": "", "influence": score, "activation": None}
    if n["kind"] == "feature":
        layer, latent, pos = n["layer"], n["latent"], n["position"]
        return {**base, "node_id": f"{layer}_{latent}_{pos}", "feature": cantor_pairing(layer, latent), "layer": str(layer),
                "feature_type": FEATURE_TYPE, "jsNodeId": f"{layer}_{latent}-0", "activation": n["activation"]}
    if n["kind"] == "error":
        layer, pos = n["layer"], n["position"]
        return {**base, "node_id": f"0_{layer}_{pos}", "feature": -1, "layer": str(layer),
                "feature_type": "mlp reconstruction error", "jsNodeId": f"{layer}_{pos}-0"}
    if n["kind"] == "token":
        pos = n["position"]
        return {**base, "node_id": f"E_{n['token_id']}_{pos}", "feature": pos, "layer": "E", "feature_type": "embedding",
                "jsNodeId": f"E_{n['token_id']}-{pos}"}
    layer, tok, pos = str(graph.n_layers + 1), n["token_id"], n["position"]
    first = i == int(graph.logit_nodes()[0])
    return {**base, "node_id": f"{layer}_{tok}_{pos}", "feature": tok, "layer": layer, "feature_type": "logit",
            "token_prob": n["probability"], "is_target_logit": first, "jsNodeId": f"L_{tok}-{pos}",
            "clerp": f'Output "{process_token(n["token"])}" (p={n["probability"]:.3f})', "influence": None}


def to_neuronpedia(graph: AttributionGraph, slug: str = "interp-graph", scan: str | None = None,
                   transcoder_list: list[str] | None = None) -> dict:
    """The graph as circuit-tracer's `Model` JSON: metadata, qParams, nodes (kept) and links (kept edges).

    scan: a Neuronpedia scan name for published transcoders (e.g. "gemma-2-2b"); without one, circuit-tracer's
    custom-scan convention is used ("custom-<hash of transcoder_list>")."""
    if graph.node_mask is None:
        graph.prune()
    transcoder_list = transcoder_list or []
    if scan is None:
        scan = "custom-" + hashlib.sha1("-".join(transcoder_list).encode()).hexdigest()[:12]
    scores = cumulative_scores(graph.influence.clamp_min(0))
    kept = graph.node_mask.nonzero().flatten().tolist()
    nodes = {i: _node(graph, i, scores[i].item()) for i in kept}
    targets, sources = graph.edge_mask.nonzero(as_tuple=True)
    links = [{"source": nodes[s]["node_id"], "target": nodes[t]["node_id"], "weight": graph.adjacency[t, s].item()}
             for t, s in zip(targets.tolist(), sources.tolist()) if s in nodes and t in nodes]
    connected = {link["source"] for link in links} | {link["target"] for link in links}
    used = [n for n in nodes.values() if n["node_id"] in connected or n["feature_type"] in ("embedding", "logit")]
    metadata = {"slug": slug, "scan": scan, "transcoder_list": transcoder_list,
                "prompt_tokens": [process_token(t) for t in graph.token_strings], "prompt": graph.prompt,
                "node_threshold": graph.meta.get("node_threshold"), "schema_version": SCHEMA_VERSION}
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": qparams, "nodes": used, "links": links}


def save_neuronpedia(graph: AttributionGraph, path: str | Path, **kwargs) -> Path:
    """Write `to_neuronpedia(graph, **kwargs)` to `path` (slug defaults to the file's stem)."""
    path = Path(path)
    kwargs.setdefault("slug", path.stem)
    write_atomic_text(path, json.dumps(to_neuronpedia(graph, **kwargs), indent=1, ensure_ascii=False))
    return path
