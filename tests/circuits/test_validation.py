import json
from pathlib import Path

import jsonschema
import pytest
import torch

from helpers import random_dictionary
from interp.circuits import LocalReplacement, attribute
from interp.circuits.validation import agreement, measured_changes, predicted_changes, validate
from interp.interventions import Intervention, run_with_interventions

SCHEMA = Path(__file__).parents[2] / "interp" / "circuits" / "graph.schema.json"
PROMPT = "cat sat"


def transcoders(model, arch="topk", bias=0.0):
    """Random transcoders; arch="relu" with a large encoder bias keeps every feature active (a linear world)."""
    out = {}
    for layer in range(model.cfg.n_layers):
        extra = {"k": 4} if arch == "topk" else {}
        tc = random_dictionary(arch, d_in=32, d_dict=12 if arch == "relu" else 48, dtype="float32", seed=layer,
                               subtract_b_dec=False, hook_in=f"blocks.{layer}.ln2.hook_normalized",
                               hook_out=f"blocks.{layer}.hook_mlp_out", **extra)
        with torch.no_grad():
            tc.W_dec.mul_(0.3)
            tc.b_enc.add_(bias)
        out[layer] = tc
    return out


@pytest.fixture(scope="module")
def setup(tiny):
    tcs = transcoders(tiny)
    return tcs, attribute(tiny, tcs, PROMPT, max_feature_nodes=10_000, progress=False)


def test_direct_prediction_is_the_frozen_held_ablation(setup, tiny):
    tcs, graph = setup
    rep = LocalReplacement(tiny, tcs, torch.tensor(graph.tokens))
    sets = [[0], [3], [1, 5, 7]]
    _, direct = predicted_changes(graph, sets)
    rows = [[Intervention.ablate(tcs[l], i, where=p) for l, p, i in graph.features[s].tolist()] for s in sets]
    logits = rep.intervene(rows, "frozen", "held")[:, -1]
    logits = logits - logits.mean(-1, keepdim=True)
    clean = rep.logits[-1] - rep.logits[-1].mean()
    measured = (logits - clean)[:, graph.logit_tokens]
    assert torch.allclose(direct, measured, atol=1e-4) and direct.abs().max() > 1e-3


def test_total_prediction_is_exact_when_every_feature_stays_active(tiny):
    """ReLU features with a large encoder bias never switch off, so the frozen replacement with free
    transcoders is linear and the graph's total prediction must match it exactly."""
    tcs = transcoders(tiny, arch="relu", bias=20.0)
    graph = attribute(tiny, tcs, PROMPT, max_feature_nodes=10_000, progress=False)
    assert graph.n_features == 12 * 2 * (len(graph.tokens) - 1)  # all active, all in the graph
    sets = [[0], [20], [0, 20, 40]]
    total, direct = predicted_changes(graph, sets)
    measured = measured_changes(tiny, tcs, graph, sets, attention="frozen")
    assert torch.allclose(total, measured, atol=1e-4)
    assert (total - direct).abs().max() > 1e-3  # indirect effects matter here


def test_batched_real_model_measurement_equals_one_full_run_per_node(setup, tiny):
    tcs, graph = setup
    sets = [[0], [graph.n_features - 1], [2], [1, graph.n_features - 2]]
    batched = measured_changes(tiny, tcs, graph, sets, batch_size=3)
    tokens = torch.tensor(graph.tokens)
    clean = tiny(tokens[None])[0, -1]
    for j, members in enumerate(sets):
        ivs = [Intervention.ablate(tcs[l], i, where=p) for l, p, i in graph.features[members].tolist()]
        logits = run_with_interventions(tiny, tokens, ivs)[0][0, -1]
        change = (logits - logits.mean()) - (clean - clean.mean())
        assert torch.allclose(batched[j], change[graph.logit_tokens], atol=1e-4)
    assert batched.abs().max() > 1e-3


def test_validation_is_written_into_the_graph_json(setup, tiny, tmp_path):
    tcs, graph = setup
    result = validate(tiny, tcs, graph, n_nodes=5, batch_size=4, progress=False)
    assert len(result["nodes"]) == 5 and [len(g["ids"]) for g in result["groups"]] == [2, 4]
    top = graph.influence[: graph.n_features].argmax().item()
    assert result["nodes"][0]["ids"] == [graph.node(top)["id"]]
    assert -1 <= result["correlation"] <= 1 and 0 <= result["sign_agreement"] <= 1
    graph.validation = result
    data = json.loads(graph.save_json(tmp_path / "g.json").read_text())
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    assert data["validation"]["nodes"][0]["measured"] == result["nodes"][0]["measured"]
    graph.validation = {}


def test_agreement_known_answers():
    p = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    assert agreement(p, 2 * p)["correlation"] == pytest.approx(1.0)
    assert agreement(p, -p) == {"correlation": pytest.approx(-1.0), "sign_agreement": 0.0}
    assert agreement(p, torch.tensor([[1.0, 2.0], [3.0, 0.5]]))["sign_agreement"] == 0.75
    assert agreement(p[:1, :1], p[:1, :1])["correlation"] is None


def test_report_shows_the_validation_with_token_strings_escaped(setup, tiny, tmp_path):
    from interp.circuits import write_report
    from interp.viz.report import Report
    from interp.viz.validation import add_validation, validation_figure

    tcs, graph = setup
    graph.validation = validate(tiny, tcs, graph, n_nodes=3, progress=False)
    page = write_report(tiny, tcs, graph, tmp_path / "r.html").read_text()
    graph.validation = {}
    assert "Validation: ablating the top nodes" in page and "measured in the real model" in page
    hostile = validate(tiny, tcs, graph, n_nodes=2, progress=False)
    hostile["logit_strings"] = ["<b>evil</b>"] * len(hostile["logit_tokens"])
    fig = validation_figure(hostile)
    assert all("<b>" not in t.name and all("<b>" not in h for h in t.hovertext) for t in fig.data[:-1])
    assert len(fig.data) == len(hostile["logit_tokens"]) + 1  # one trace per logit and the diagonal
    page = add_validation(Report("t"), hostile).html()
    assert "&lt;b&gt;evil" in page and "<b>evil" not in page


def test_interp_circuit_validates_by_default(setup, tmp_path, capsys):
    from interp.cli import main

    tcs, _ = setup
    for layer, tc in tcs.items():
        tc.save(tmp_path / "tcs" / f"layer_{layer}")
    common = ["circuit", "--prompt", PROMPT, "--transcoders", str(tmp_path / "tcs"), "--model",
              "tiny:n_layers=2,d_model=32,n_heads=4,d_mlp=64,n_ctx=64", "--contexts", "0"]
    assert main([*common, "--out", str(tmp_path / "a.html"), "--validate", "3"]) == 0
    assert "validated 3 nodes" in capsys.readouterr().out
    assert json.loads((tmp_path / "a.json").read_text())["validation"]["n_nodes"] == 3
    assert "Validation: ablating the top nodes" in (tmp_path / "a.html").read_text()
    assert main([*common, "--out", str(tmp_path / "b.html"), "--validate", "0"]) == 0
    assert "validation" not in json.loads((tmp_path / "b.json").read_text())
