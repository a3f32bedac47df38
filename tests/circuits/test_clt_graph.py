"""Attribution graphs on a cross-layer transcoder's replacement model."""

import math

import pytest
import torch

from interp.circuits import LocalReplacement, Target, attribute
from interp.model import load_model
from transcoders.clt import CLTConfig, CrossLayerTranscoder

SPEC = "tiny:n_layers=3,d_model=32,n_heads=4,d_mlp=64,n_ctx=64"


@pytest.fixture(scope="module")
def model():
    return load_model(SPEC)


def random_clt(model, cross_scale=0.3, seed=0):
    cfg = CLTConfig(n_layers=model.cfg.n_layers, d_model=model.cfg.d_model, d_dict=48, k=4, model=SPEC)
    clt = CrossLayerTranscoder(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for W in clt.W_dec:
            W[:, 1:] *= cross_scale / 0.3
    return clt


def check_exact(graph):
    targets = torch.cat([torch.arange(graph.n_features), graph.logit_nodes()])
    total = graph.adjacency[targets].sum(1) + graph.biases[targets]
    torch.testing.assert_close(total, graph.values[targets], atol=1e-4, rtol=1e-4)


def test_clt_graph_is_exact_in_the_frozen_replacement_model(model):
    graph = attribute(model, random_clt(model).layer_transcoders(), "The cat sat", max_feature_nodes=10_000, progress=False)
    check_exact(graph)
    assert graph.n_features > 0


def test_a_cross_layer_edge_is_the_effect_of_removing_every_write_of_its_source(model):
    """Removing a layer-0 feature's writes to MLP outputs 0, 1 and 2 in the frozen replay changes a layer-2
    pre-activation by exactly its edge; removing only its own-layer write (per-layer view) does not."""
    clt = random_clt(model)
    tcs = clt.layer_transcoders()
    rep = LocalReplacement(model, tcs, torch.tensor([256, *b"abcde"]))
    active = rep.active_features()
    source = active[(active[:, 0] == 0) & (active[:, 1] == 2)][0]
    target = Target("feature", 2, 4, int(active[(active[:, 0] == 2) & (active[:, 1] == 4)][0, 2]))
    edge = rep.edges([target], active)[0, (active == source).all(1).nonzero()[0, 0]].item()

    def after(layers):
        leaves = [leaf.detach().clone() for leaf in rep.mlp_leaves]
        _, pos, latent = source.tolist()
        for m in layers:
            leaves[m][pos] -= rep.codes[0][pos, latent] * clt.W_dec[0][latent, m].detach()
        with torch.no_grad():
            mlp_in, _ = rep._replay(rep.embedding, leaves)
        return tcs[2].pre_acts(mlp_in[2][target.position:target.position + 1], torch.tensor([target.index]))[0, 0].item()

    assert edge != 0 and math.isclose(rep.value(target) - after([0, 1, 2]), edge, rel_tol=1e-4, abs_tol=1e-5)
    assert not math.isclose(rep.value(target) - after([0]), edge, rel_tol=1e-2)


def test_zero_cross_layer_decoders_give_the_per_layer_graph(model):
    clt = random_clt(model, cross_scale=0.0)
    views = clt.layer_transcoders()
    plain = {layer: tc for layer, tc in views.items()}
    for tc in plain.values():
        del tc.W_dec_cross
    a = attribute(model, clt.layer_transcoders(), "The cat sat", max_feature_nodes=10_000, progress=False)
    b = attribute(model, plain, "The cat sat", max_feature_nodes=10_000, progress=False)
    assert torch.equal(a.features, b.features)
    torch.testing.assert_close(a.adjacency, b.adjacency)
