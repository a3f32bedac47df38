"""The local interaction basis: known answers on linear networks, stochastic sources against exact
Jacobians, exact bias folding and centring, and the transformer chain against the model's own forward."""

import argparse

import pytest
import torch

from interp.analysis.interaction import (Chain, LibConfig, build_lib, direction_curve, edge_curve, gram, interaction_basis,
                                load_result, neuron_basis, pca_basis, save_result, whitening)
from interp.analysis.interaction_models import mlp_chain, node_value, transformer_chain
from interp.analysis.jacobians import jacobian_gram


def _linear_chain(d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    Ws = [torch.randn(d, d, generator=g, dtype=torch.float64) for _ in range(2)]
    bs = [torch.randn(d, generator=g, dtype=torch.float64) for _ in range(2)]
    steps = [lambda x, W=W, b=b: x @ W + b for W, b in zip(Ws, bs)]
    x = torch.randn(1200, d, generator=g, dtype=torch.float64) * torch.linspace(3, 0.3, d, dtype=torch.float64) + 1.0
    chain = Chain(["a", "b", "c"], steps, lambda b: b["x"][:, None], lambda b, T: torch.ones(len(b["x"]), T, dtype=torch.bool),
                  lambda y, b: {"loss": float((y - b["y"]).pow(2).mean()), "accuracy": 1.0})
    y = steps[1](steps[0](x))
    return chain, [{"x": x[i:i + 600], "y": y[i:i + 600, None]} for i in (0, 600)]


def test_linear_network_edges_are_diagonal():
    """Known answer: with a PCA output basis, a linear network's LIB edges pair each direction with exactly one
    direction of the next layer, and Lambda equals the output's PCA variances at every layer."""
    chain, batches = _linear_chain()
    result = build_lib(chain, batches, LibConfig(sources=0, final_basis="pca"), progress=False)
    for E in result.edges.values():
        E = E / E.max()
        assert (E - torch.diag(E.diagonal())).abs().max() < 1e-9
        assert E.diagonal().min() > 1e-6  # one partner each, none missing
    out_var = result.pca["c"].eigenvalues
    for node in ("a", "b"):
        lam = result.lib[node].eigenvalues
        torch.testing.assert_close(lam[1:], out_var[1:], rtol=1e-8, atol=0)


def test_interactions_in_lib_basis_are_whitened_and_diagonal():
    """In the basis the Jacobian Gram of the next layer is the identity and the activations have variance Lambda."""
    chain, batches = _linear_chain()
    result = build_lib(chain, batches, LibConfig(sources=0, final_basis="pca", edges=False), progress=False)
    a, b = result.lib["a"], result.lib["b"]
    fh = a.transform(torch.cat([bt["x"] for bt in batches]))
    torch.testing.assert_close(fh[:, 1:].T @ fh[:, 1:] / len(fh), torch.diag(a.eigenvalues[1:]), atol=1e-8, rtol=1e-8)
    step = chain.steps[0]
    J = a.C_pinv[1:, :-1] @ step(torch.eye(5, dtype=torch.float64)).sub(step(torch.zeros(1, 5, dtype=torch.float64))) @ b.C[:-1, 1:]
    torch.testing.assert_close(J @ J.T, torch.eye(5, dtype=torch.float64), atol=1e-8, rtol=1e-8)


def test_stochastic_sources_converge_to_exact(tiny):
    chain = transformer_chain(tiny, ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "logits"])
    tokens = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 256
    batch = {"tokens": tokens}
    x = chain.first(batch)
    triple = [(x, chain.mask(batch, 6), chain.mask(batch, 6))]
    C = torch.randn(33, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) / 8
    exact = jacobian_gram(chain.steps[0], triple, C, sources=0)
    errors = [((jacobian_gram(chain.steps[0], triple, C, sources=s, seed=1) - exact).norm() / exact.norm()).item() for s in (16, 1024)]
    assert errors[1] < 0.08 and errors[1] < errors[0] / 3


@pytest.mark.parametrize("center", [True, False])
def test_bias_folding_and_centering_reconstruct_exactly(tiny, center):
    tokens = torch.randint(0, 256, (6, 16), generator=torch.Generator().manual_seed(0))
    chain = transformer_chain(tiny, ["blocks.1.hook_resid_pre", "logits"], skip_bos=False)
    result = build_lib(chain, [{"tokens": tokens}], LibConfig(sources=4, center=center, lambda_threshold=0.0, edges=False), progress=False)
    basis = result.lib["blocks.1.hook_resid_pre"]
    f = chain.first({"tokens": tokens}).double()
    assert basis.n == 32 + (not center) and basis.constant == center
    torch.testing.assert_close(basis.inverse(basis.transform(f)), f, atol=1e-9, rtol=0)
    if center:  # the constant direction is exactly 1 and the others have zero mean
        fh = basis.transform(f)
        torch.testing.assert_close(fh[..., 0], torch.ones_like(fh[..., 0]))
        assert fh[..., 1:].mean((0, 1)).abs().max() < 1e-9


def test_whitening_and_baselines_from_one_gram():
    x = torch.randn(500, 4, dtype=torch.float64) @ torch.randn(4, 4, dtype=torch.float64) + 2
    G = gram([x[:, None]], [torch.ones(500, 1, dtype=torch.bool)])
    for center in (True, False):
        R, _ = whitening(G, center)
        torch.testing.assert_close(R.T @ G @ R, torch.eye(5, dtype=torch.float64), atol=1e-9, rtol=0)
    for basis in (pca_basis(G), neuron_basis(G)):
        torch.testing.assert_close(basis.inverse(basis.transform(x)), x)
        assert (basis.eigenvalues[1:].diff() <= 1e-12).all()
    assert interaction_basis(G, torch.eye(5, dtype=torch.float64), LibConfig()).n == 4


def test_chain_steps_match_the_model(tiny):
    tokens = torch.randint(0, 256, (2, 8))
    nodes = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.mlp.hook_post", "blocks.1.hook_resid_pre", "logits"]
    chain = transformer_chain(tiny, nodes)
    xs = chain.node_values({"tokens": tokens}, len(nodes) - 1)
    torch.testing.assert_close(xs[-1], tiny(tokens), atol=1e-5, rtol=1e-5)
    for node, x in zip(nodes[:-1], xs):
        torch.testing.assert_close(x, node_value(tiny, tokens, node), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="forward order"):
        transformer_chain(tiny, ["blocks.1.hook_resid_pre", "blocks.0.hook_resid_pre", "logits"])


def test_curves_save_load_and_mlp(tmp_path):
    from interp.analysis.toy_models import MLP, MLPConfig, mlp_data

    cfg = MLPConfig(d_in=6, d_hidden=8, n_classes=3, n_train=64, n_test=64)
    torch.manual_seed(0)
    mlp = MLP(cfg).requires_grad_(False)
    data = mlp_data(cfg)
    chain = mlp_chain(mlp)
    batches = [{"x": data["test_x"], "labels": data["test_labels"]}]
    result = build_lib(chain, batches, LibConfig(sources=0), progress=False)
    clean = chain.metrics(chain.run_from(0, chain.first(batches[0])), batches[0])
    for k, node in enumerate(chain.nodes[:-1]):
        full = direction_curve(chain, k, result.lib[node], batches, [result.lib[node].n])[0]
        assert abs(full["loss"] - clean["loss"]) < 1e-4
    E = result.edges["hidden.0->hidden.1"]
    edges = edge_curve(chain, 1, result, batches, [0, E.numel()])
    assert abs(edges[-1]["loss"] - clean["loss"]) < 1e-4 and edges[0]["loss"] != edges[-1]["loss"]
    back = load_result(save_result(result, tmp_path / "lib"))
    assert back.nodes == result.nodes and back.cfg == result.cfg
    torch.testing.assert_close(back.lib["hidden.0"].C, result.lib["hidden.0"].C)
    torch.testing.assert_close(back.edges["input->hidden.0"], result.edges["input->hidden.0"])


def test_cli_lib_on_a_tiny_modadd(tmp_path):
    from interp.cli import lib_command
    from interp.analysis.toy_models import ModAddConfig, train_modadd

    train_modadd(ModAddConfig(p=7, d_model=16, n_heads=2, d_mlp=32, steps=5, frac_train=0.5), tmp_path / "m", log_every=5)
    parser = argparse.ArgumentParser()
    lib_command.add_arguments(parser)
    args = parser.parse_args(["--model", f"modadd:{tmp_path / 'm'}", "--contexts", "20", "--eval-contexts", "20",
                              "--sources", "2", "--points", "3", "--out", str(tmp_path / "lib")])
    assert lib_command.run(args) == 0
    for name in ("bases.safetensors", "lib.json", "summary.json", "report.html"):
        assert (tmp_path / "lib" / name).exists()
