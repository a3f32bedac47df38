"""Our attribution graphs written in circuit-tracer's / Neuronpedia's graph JSON, validated against the schema
written down from circuit-tracer's pydantic models (interp/circuits/neuronpedia.schema.json)."""

import json
from collections import Counter

import jsonschema
import pytest
import torch

from helpers import random_dictionary
from interp.circuits import attribute
from interp.circuits.neuronpedia import SCHEMA_FILE, cumulative_scores, save_neuronpedia, to_neuronpedia


@pytest.fixture(scope="module")
def graph(tiny):
    tcs = {layer: random_dictionary("relu", d_in=32, d_dict=24, dtype="float32", seed=layer, subtract_b_dec=False,
                                    hook_in=f"blocks.{layer}.ln2.hook_normalized", hook_out=f"blocks.{layer}.hook_mlp_out")
           for layer in range(2)}
    for tc in tcs.values():
        with torch.no_grad():
            tc.W_dec.mul_(0.3)
    return attribute(tiny, tcs, "a\tcat", max_feature_nodes=10_000, progress=False)


def test_graph_json_validates_and_matches_the_graph(graph, tmp_path):
    path = save_neuronpedia(graph, tmp_path / "cat-graph.json", scan="tiny-relu", transcoder_list=["tiny/0", "tiny/1"])
    data = json.loads(path.read_text())
    jsonschema.validate(data, json.loads(SCHEMA_FILE.read_text()))
    meta = data["metadata"]
    assert meta["slug"] == "cat-graph" and meta["scan"] == "tiny-relu" and meta["prompt"] == "a\tcat"
    assert meta["prompt_tokens"] == [t.replace("\t", "→") for t in graph.token_strings] and "→" in meta["prompt_tokens"]
    counts = Counter(n["node_id"] for n in data["nodes"])
    ids = set(counts)
    # circuit-tracer's ids collide when a layer-0 feature's latent equals an error node's layer ("0_{L}_{P}");
    # that is their format, kept as is
    assert all(i.startswith("0_") and int(i.split("_")[1]) < graph.n_layers for i, c in counts.items() if c > 1)
    assert sum(n["feature_type"] == "embedding" for n in data["nodes"]) == graph.n_pos
    logits = [n for n in data["nodes"] if n["feature_type"] == "logit"]
    assert len(logits) == len(graph.logit_tokens) and sum(n["is_target_logit"] for n in logits) == 1
    assert {n["layer"] for n in logits} == {"3"} and all(n["ctx_idx"] == graph.n_pos - 1 for n in logits)
    by_id: dict[str, list[int]] = {}
    for i in graph.node_mask.nonzero().flatten().tolist():
        n = graph.node(i)
        key = {"feature": lambda: f"{n['layer']}_{n.get('latent')}_{n['position']}", "error": lambda: f"0_{n['layer']}_{n['position']}",
               "token": lambda: f"E_{n.get('token_id')}_{n['position']}",
               "logit": lambda: f"{graph.n_layers + 1}_{n.get('token_id')}_{n['position']}"}[n["kind"]]()
        by_id.setdefault(key, []).append(i)
    assert ids <= set(by_id)
    assert data["links"] and all(link["source"] in ids and link["target"] in ids for link in data["links"])
    for link in data["links"]:
        assert any(link["weight"] == graph.adjacency[t, s].item() for t in by_id[link["target"]] for s in by_id[link["source"]])
    assert len(data["links"]) == int(graph.edge_mask.sum())
    features = [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert features and all(n["activation"] > 0 for n in features)
    for n in features:  # circuit-tracer 0.5.0: feature = Cantor pairing of (layer, latent)
        layer, latent, _ = map(int, n["node_id"].split("_"))
        assert n["feature"] == (layer + latent) * (layer + latent + 1) // 2 + latent
    assert meta["schema_version"] == 1


def test_cumulative_scores_follow_circuit_tracer():
    scores = cumulative_scores(torch.tensor([1.0, 3.0, 0.0, 4.0]))  # sorted 4, 3, 1, 0 -> 0.5, 0.875, 1, 1
    assert torch.allclose(scores, torch.tensor([1.0, 0.875, 1.0, 0.5]))


def test_schema_rejects_a_broken_graph(graph):
    data = to_neuronpedia(graph)
    del data["nodes"][0]["node_id"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json.loads(SCHEMA_FILE.read_text()))
    assert to_neuronpedia(graph)["metadata"]["scan"].startswith("custom-")


def test_cli_circuit_on_a_circuit_tracer_set_writes_neuronpedia_json(tiny, tmp_path):
    import argparse

    from helpers import TINY
    from interp.cli import circuit_command
    from interp.io.circuit_tracer import save_circuit_tracer_set

    tcs = {layer: random_dictionary("relu", d_in=32, d_dict=24, dtype="float32", seed=layer, subtract_b_dec=False, model=TINY,
                                    hook_in=f"blocks.{layer}.ln2.hook_normalized", hook_out=f"blocks.{layer}.hook_mlp_out")
           for layer in range(2)}
    save_circuit_tracer_set(tcs, tmp_path / "set")
    p = argparse.ArgumentParser()
    circuit_command.add_arguments(p)
    args = p.parse_args(["--prompt", "to be", "--transcoders", str(tmp_path / "set" / "config.yaml"), "--out",
                         str(tmp_path / "c.html"), "--contexts", "0", "--validate", "0", "--neuronpedia-json",
                         str(tmp_path / "np.json")])
    assert circuit_command.run(args) == 0
    data = json.loads((tmp_path / "np.json").read_text())
    jsonschema.validate(data, json.loads(SCHEMA_FILE.read_text()))
    assert data["metadata"]["prompt"] == "to be" and len(data["metadata"]["transcoder_list"]) == 2
