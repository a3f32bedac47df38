"""Every analysis command through `interp.cli.main`, on the tiny model with small budgets, checked on what it writes."""

import json

import pytest
import torch
from safetensors.torch import load_file

from helpers import TINY, random_dictionary
from interp.analysis.features import FeatureStats
from interp.cli import main

HOOK = "blocks.1.hook_resid_post"
SOURCE = ["--n-ctx", "32", "--eval-contexts", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A random SAE run folder and a random transcoder set (one per layer of the tiny model)."""
    root = tmp_path_factory.mktemp("runs")
    for width in (16, 32):  # two widths: dark matter compares them
        random_dictionary("topk", d_in=32, d_dict=width, dtype="float32", hook_in=HOOK, model=TINY, seed=width) \
            .save(root / f"sae{width}")
    for layer in range(2):
        random_dictionary("topk", d_in=32, d_dict=24, dtype="float32", seed=layer, subtract_b_dec=False, model=TINY,
                          hook_in=f"blocks.{layer}.ln2.hook_normalized", hook_out=f"blocks.{layer}.hook_mlp_out") \
            .save(root / "tcs" / f"layer_{layer}")
    return root


def test_features_writes_stats_and_a_page_per_feature(runs, tmp_path):
    """The positional RUN used to overwrite the command's dispatch (TypeError: 'str' object is not callable)."""
    site = tmp_path / "site"
    assert main(["features", str(runs / "sae16"), "--out", str(site), "--contexts", "4", "--batch-size", "4", "--top", "3",
                 *SOURCE]) == 0
    assert (site / "index.html").stat().st_size > 1000
    assert sorted(p.name for p in (site / "data").glob("f*.js")) == sorted(f"f{i}.js" for i in range(16))
    stats = FeatureStats.load(site / "stats")
    assert (stats.meta["contexts"], stats.meta["tokens_seen"], stats.d_dict) == (4, 4 * 31, 16)


def test_eval_rewrites_metrics_of_a_saved_run(runs, tmp_path):
    run = tmp_path / "sae"
    random_dictionary("topk", d_in=32, d_dict=16, dtype="float32", hook_in=HOOK, model=TINY).save(run)
    assert main(["eval", str(run), *SOURCE]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["l0"] <= 4 and metrics["ce_loss_clean"] > 0 and (run / "density.html").exists()


def test_darkmatter_reports_each_sae_and_the_width_scaling(runs, tmp_path):
    out, tables = tmp_path / "dm.html", tmp_path / "dm.json"
    assert main(["darkmatter", str(runs / "sae16"), str(runs / "sae32"), "--train-contexts", "4", "--ce-contexts", "2",
                 "--out", str(out), "--json", str(tables), *SOURCE]) == 0
    data = json.loads(tables.read_text())
    assert set(data["scores"]) == {"sae16", "sae32"} and "scaling" in data
    assert all(s["tokens"] == 2 * 31 and 0 <= s["linear_share"] <= 1 for s in data["scores"].values())
    assert "sae32" in out.read_text()


def test_circuit_writes_a_report_and_a_graph_on_the_transcoders(runs, tmp_path):
    out = tmp_path / "circuit.html"
    assert main(["circuit", "--prompt", "to be or", "--target", " ", "--transcoders", str(runs / "tcs"), "--out", str(out),
                 "--contexts", "2", "--n-ctx", "32", "--max-features", "32"]) == 0
    graph = json.loads(out.with_suffix(".json").read_text())
    assert graph["meta"]["transcoders"] == str((runs / "tcs").resolve())
    assert graph["prompt"] == "to be or" and graph["tokens"][1:] == list(b"to be or") and graph["n_layers"] == 2
    assert graph["nodes"] and graph["edges"]
    assert out.stat().st_size > 10_000


def test_circuit_takes_a_cross_layer_transcoder_folder(runs, tmp_path):
    """A CLT whose cross-layer decoders are zero is its per-layer transcoders: the same graph from either folder."""
    from interp.io import load_transcoder_set
    from transcoders.clt import CrossLayerTranscoder

    CrossLayerTranscoder.from_transcoders(load_transcoder_set(runs / "tcs")).save(tmp_path / "clt")
    graphs = []
    for name, folder in (("per_layer", runs / "tcs"), ("clt", tmp_path / "clt")):
        out = tmp_path / f"{name}.html"
        assert main(["circuit", "--prompt", "to be or", "--target", " ", "--transcoders", str(folder), "--out", str(out),
                     "--contexts", "2", "--n-ctx", "32", "--max-features", "32", "--validate", "0"]) == 0
        graphs.append(json.loads(out.with_suffix(".json").read_text()))
    per_layer, clt = graphs
    assert [n["id"] for n in clt["nodes"]] == [n["id"] for n in per_layer["nodes"]] and clt["edges"]
    assert clt["scores"] == pytest.approx(per_layer["scores"], abs=1e-5)


def test_lib_saves_bases_and_a_report(tmp_path):
    nodes = "blocks.0.hook_resid_post,blocks.1.hook_resid_post,logits"
    assert main(["lib", "--model", TINY, "--nodes", nodes, "--contexts", "2", "--batch-size", "2", "--sources", "2",
                 "--points", "4", "--out", str(tmp_path), *SOURCE]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["directions"]) >= {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    bases = load_file(tmp_path / "bases.safetensors")
    C = bases["lib/blocks.1.hook_resid_post/C"]
    assert C.shape[-1] == 32 and torch.isfinite(C).all()
    assert (tmp_path / "report.html").exists()
