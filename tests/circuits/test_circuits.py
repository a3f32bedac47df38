import argparse
import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import jsonschema
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from helpers import random_dictionary
from interp.circuits import LocalReplacement, Target, attribute, top_paths, write_report
from interp.circuits.graph import AttributionGraph
from interp.circuits.pruning import graph_scores, influence, normalize_rows, prune
from interp.circuits.transcoder_circuits import de_embedding, factorized_attribution
from interp.cli import circuit_command
from interp.dictionary import DictionaryConfig, architecture
from interp.model import BYTE_VOCAB
from transcoders.sets import load_transcoder_set

SCHEMA = Path(__file__).parents[2] / "interp" / "circuits" / "graph.schema.json"


def random_transcoders(model, d_dict=48, k=4, scale=0.3, skip=False):
    out = {}
    for layer in range(model.cfg.n_layers):
        tc = random_dictionary("topk", d_in=model.cfg.d_model, d_dict=d_dict, k=k, dtype="float32", seed=layer,
                               hook_in=f"blocks.{layer}.ln2.hook_normalized", hook_out=f"blocks.{layer}.hook_mlp_out",
                               subtract_b_dec=False, skip=skip, model="tiny:n_layers=2,d_model=32,n_heads=4,d_mlp=64,n_ctx=64")
        with torch.no_grad():
            tc.W_dec.mul_(scale)
        out[layer] = tc
    return out


@pytest.fixture(scope="module")
def graph(tiny):
    return attribute(tiny, random_transcoders(tiny), "The cat sat", max_feature_nodes=10_000, batch_size=16,
                     progress=False)


def test_edges_and_bias_add_up_to_every_value(graph, tiny):
    """Exactness: in the frozen linear model a node's incoming direct effects plus its bias are its value
    (also with skip transcoders, whose linear path carries gradients between the sources and the target)."""
    skip_graph = attribute(tiny, random_transcoders(tiny, skip=True), "The cat sat", max_feature_nodes=10_000,
                           progress=False)
    for g in (graph, skip_graph):
        check_exact(g)


def check_exact(graph):
    targets = torch.cat([torch.arange(graph.n_features), graph.logit_nodes()])
    total = graph.adjacency[targets].sum(1) + graph.biases[targets]
    assert torch.allclose(total, graph.values[targets], atol=1e-4, rtol=1e-4)
    assert graph.adjacency[targets].abs().sum(1).min() > 0  # every target has inputs


def test_an_edge_is_the_effect_of_removing_its_source_in_the_frozen_model(tiny):
    """Ablating one layer-0 feature in the replay (MLP outputs held fixed) changes a layer-1 pre-activation by its edge."""
    tcs = random_transcoders(tiny)
    rep = LocalReplacement(tiny, tcs, torch.tensor([256, *b"abcde"]))
    active = rep.active_features()
    source = active[(active[:, 0] == 0) & (active[:, 1] == 2)][0]
    target = Target("feature", 1, 4, int(active[(active[:, 0] == 1) & (active[:, 1] == 4)][0, 2]))
    edge = rep.edges([target], active)[0, (active == source).all(1).nonzero()[0, 0]].item()
    leaves = [leaf.detach().clone() for leaf in rep.mlp_leaves]
    layer, pos, latent = source.tolist()
    leaves[layer][pos] -= rep.codes[layer][pos, latent] * tcs[layer].W_dec[latent]
    with torch.no_grad():
        mlp_in, _ = rep._replay(rep.embedding, leaves)
    tc = tcs[1]
    after = tc.pre_acts(mlp_in[1][target.position : target.position + 1], torch.tensor([target.index]))[0, 0].item()
    assert edge != 0 and math.isclose(rep.value(target) - after, edge, rel_tol=1e-4, abs_tol=1e-5)


def test_factorized_attribution_sums_to_the_edge(tiny):
    """Dunefsky et al.: activation x invariant connection, over the residual and each head, equals the graph edge."""
    tcs = random_transcoders(tiny)
    rep = LocalReplacement(tiny, tcs, torch.tensor([256, *b"hello"]))
    active = rep.active_features()
    for (p, t) in ((3, 3), (1, 4)):
        up = active[(active[:, 0] == 0) & (active[:, 1] == p)][0]
        down = active[(active[:, 0] == 1) & (active[:, 1] == t)][0]
        edge = rep.edges([Target("feature", *down.tolist())], active)[0, (active == up).all(1).nonzero()[0, 0]].item()
        parts = factorized_attribution(tiny, rep, tuple(up.tolist()), tuple(down.tolist()))
        assert (parts["residual"] != 0) == (p == t)
        assert math.isclose(parts["residual"] + sum(map(sum, parts["heads"])), edge, rel_tol=1e-4, abs_tol=1e-6)


# --- a hand-built model whose circuit is known ------------------------------------------------------
def planted_model():
    """Attention off; token 'a' writes 2 e0; L0 neuron 0 reads e0, writes 3 e1; L1 neuron 0 reads e1, writes e2;
    the unembedding reads 5 e2 into 'b'. A distractor: 'c' writes e5, L0 neuron 1 reads e5, writes e6 (read by nobody)."""
    cfg = HookedTransformerConfig(n_layers=2, d_model=8, n_heads=1, d_head=8, d_mlp=8, n_ctx=16, d_vocab=BYTE_VOCAB,
                                  act_fn="relu", normalization_type="RMSPre", device="cpu", seed=0)
    model = HookedTransformer(cfg)
    e = torch.eye(8)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[ord("a")] = 2 * e[0]
        model.embed.W_E[ord("c")] = 2 * e[5]
        for block in model.blocks:
            block.mlp.b_in.fill_(-1.0)
        mlp0, mlp1 = model.blocks[0].mlp, model.blocks[1].mlp
        mlp0.W_in[:, 0], mlp0.b_in[0], mlp0.W_out[0] = e[0], 0.0, 3 * e[1]
        mlp0.W_in[:, 1], mlp0.b_in[1], mlp0.W_out[1] = e[5], 0.0, 3 * e[6]
        mlp1.W_in[:, 0], mlp1.b_in[0], mlp1.W_out[0] = e[1], 0.0, e[2]
        model.unembed.W_U[:, ord("b")] = 5 * e[2]
    model.requires_grad_(False)
    transcoders = {}
    for layer, block in enumerate(model.blocks):  # transcoders equal to the MLPs: no error
        tc = architecture("relu")(DictionaryConfig(arch="relu", d_in=8, d_dict=8, l1_coeff=1.0, subtract_b_dec=False,
                                                   hook_in=f"blocks.{layer}.ln2.hook_normalized",
                                                   hook_out=f"blocks.{layer}.hook_mlp_out"))
        with torch.no_grad():
            tc.W_enc.copy_(block.mlp.W_in)
            tc.b_enc.copy_(block.mlp.b_in)
            tc.W_dec.copy_(block.mlp.W_out)
            tc.b_dec.copy_(block.mlp.b_out)
        transcoders[layer] = tc
    return model, transcoders


def test_known_circuit_of_a_hand_built_model():
    model, transcoders = planted_model()
    g = attribute(model, transcoders, "ca", target="b", progress=False)
    data = g.to_json()
    kept = {n["id"] for n in data["nodes"] if n["kept"] and n["kind"] == "feature"}
    assert kept == {"feature/0/2/0", "feature/1/2/0"}  # the distractor feature/0/1/1 is pruned
    edges = {(e["source"], e["target"]): e["weight"] for e in data["edges"]}
    rms = lambda *squares: math.sqrt(sum(squares) / 8 + model.cfg.eps)
    a0 = 2 / rms(4)  # L0 neuron 0 pre-activation: (2 e0 / s) . e0
    a1 = 3 * a0 / rms(4, 9 * a0**2)
    logit = 5 * a1 / rms(4, 9 * a0**2, a1**2) * (1 - 1 / BYTE_VOCAB)  # demeaned
    assert math.isclose(edges[("token/2", "feature/0/2/0")], a0, rel_tol=1e-5)
    assert math.isclose(edges[("feature/0/2/0", "feature/1/2/0")], a1, rel_tol=1e-5)
    assert math.isclose(edges[("feature/1/2/0", f"logit/{ord('b')}")], logit, rel_tol=1e-5)
    assert g.scores["replacement"] == pytest.approx(1.0) and g.scores["completeness"] == pytest.approx(1.0)
    path = top_paths(g, int(g.logit_nodes()[g.logit_tokens.index(ord("b"))]), k=1)[0]
    assert [g.node(i)["id"] for i in path.nodes] == ["token/2", "feature/0/2/0", "feature/1/2/0", f"logit/{ord('b')}"]
    scores, ids = de_embedding(model, transcoders[0], 0, k=1)
    assert ids.tolist() == [ord("a")]


# --- pruning and scores on hand-made graphs --------------------------------------------------------
def chain_graph():
    """Nodes: 0 token, 1 error, 2 feature, 3 feature, 4 logit. 0->2 (3), 1->2 (1), 2->4 (2), 0->3 (0.1), 3->4 (-0.1)."""
    a = torch.zeros(5, 5)
    a[2, 0], a[2, 1], a[4, 2], a[3, 0], a[4, 3] = 3.0, 1.0, 2.0, 0.1, -0.1
    return a, torch.tensor([0, 0, 0, 0, 1.0])


def test_influence_is_the_sum_over_paths():
    a, w = chain_graph()
    n = normalize_rows(a)
    closed_form = w @ (torch.linalg.inv(torch.eye(5) - n) - torch.eye(5))
    assert torch.allclose(influence(n, w), closed_form, atol=1e-6)
    assert influence(n, w)[0] == pytest.approx(2 / 2.1 * 0.75 + 0.1 / 2.1)


def test_pruning_keeps_the_strong_path_and_scores_count_error_influence():
    a, w = chain_graph()
    keep = torch.tensor([True, False, False, False, True])
    nodes, edges, _ = prune(a, w, keep, node_threshold=0.9, edge_threshold=0.9)
    assert nodes.tolist() == [True, True, True, False, True]
    assert edges[4, 2] and edges[2, 0] and not edges[4, 3]
    scores = graph_scores(a, w, error_nodes=torch.tensor([1]), token_nodes=torch.tensor([0]))
    token, error = 2 / 2.1 * 0.75 + 0.1 / 2.1, 2 / 2.1 * 0.25
    assert scores["replacement"] == pytest.approx(token / (token + error), rel=1e-5)
    weights = [token, error, 2 / 2.1, 0.1 / 2.1, 1.0]  # influence (+ logit weight) of nodes 0..4
    non_error = [1, 1, 0.75, 1, 1]  # node 2 takes a quarter of its input from the error node
    expected = sum(w * f for w, f in zip(weights, non_error)) / sum(weights)
    assert scores["completeness"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="node_threshold"):
        prune(a, w, keep, node_threshold=1.5)


# --- JSON, report, CLI -------------------------------------------------------------------------------
def test_graph_json_follows_its_schema(graph, tmp_path):
    data = json.loads(graph.save_json(tmp_path / "g.json").read_text())
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    ids = [n["id"] for n in data["nodes"]]
    assert len(ids) == len(set(ids)) == len(graph.adjacency)
    kept = {n["id"] for n in data["nodes"] if n["kept"]}
    assert data["edges"] and all(e["source"] in kept and e["target"] in kept for e in data["edges"])


EVIL = '<script>alert("x")</script> \'q\' &amp;'


def evil_report(graph, tiny, tmp_path):
    """A report whose every token string (prompt, tokens, logits, contexts) is hostile."""
    graph = AttributionGraph(**{**graph.__dict__, "prompt": EVIL, "token_strings": [EVIL] * graph.n_pos,
                                "logit_strings": [EVIL] * len(graph.logit_tokens)})
    tcs = random_transcoders(tiny)
    path = write_report(tiny, tcs, graph, tmp_path / "report.html", corpus=torch.tensor([[256, *b"ab<c>d\"e'f"] * 2]))
    return graph, path


def test_report_escapes_every_token_string(graph, tiny, tmp_path):
    graph, path = evil_report(graph, tiny, tmp_path)
    page = path.read_text()
    assert "<script>alert" not in page and 'alert("x")' not in page
    scripts = page.count("<script")
    assert scripts == 4, scripts  # plotly.js, the figure, the data island, the panel code: no injected ones
    assert "&lt;script&gt;alert(&quot;x&quot;)" in page  # visible, escaped


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_opens_in_headless_chromium_and_shows_the_graph(graph, tiny, tmp_path):
    graph, path = evil_report(graph, tiny, tmp_path)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=4000"]

    def chromium(*extra):
        with tempfile.TemporaryDirectory() as profile:
            return subprocess.run(["chromium", *flags, f"--user-data-dir={profile}", *extra, path.as_uri()],
                                  capture_output=True, text=True, timeout=60)

    dom = chromium("--dump-dom")
    shot = chromium(f"--screenshot={tmp_path / 'shot.png'}", "--window-size=1280,1400")
    for result in (dom, shot):
        assert not [line for line in result.stderr.splitlines() if ":CONSOLE" in line], result.stderr
    kept = int(graph.node_mask.sum())
    assert dom.stdout.count('class="point plotly-customdata"') == kept  # plotly drew one marker per kept node
    detail = dom.stdout.split('id="node-detail"')[1]
    assert "<h3>L" in detail[:300] and "Top activating contexts" in detail  # the panel script ran
    assert "<script>alert" not in dom.stdout
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_cli_writes_report_and_json(tiny, tmp_path):
    for layer, tc in random_transcoders(tiny).items():
        tc.save(tmp_path / "tcs" / f"layer_{layer}")
    assert sorted(load_transcoder_set(tmp_path / "tcs", n_layers=2)) == [0, 1]
    p = argparse.ArgumentParser()
    circuit_command.add_arguments(p)
    args = p.parse_args(["--prompt", "to be or", "--target", "n", "--transcoders", str(tmp_path / "tcs"), "--out",
                         str(tmp_path / "c.html"), "--contexts", "4", "--n-ctx", "32"])
    assert circuit_command.run(args) == 0
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["prompt"] == "to be or" and f"logit/{ord('n')}" in {n["id"] for n in data["nodes"]}
    assert "Plotly.newPlot" in (tmp_path / "c.html").read_text()
    with pytest.raises(ValueError, match="exactly one token"):
        circuit_command.run(p.parse_args(["--prompt", "x", "--target", "no", "--transcoders", str(tmp_path / "tcs"),
                                          "--out", str(tmp_path / "d.html")]))
