import argparse

import plotly.graph_objects as go
import pytest
import torch

from helpers import random_dictionary
from interp.analysis import darkmatter as dm
from interp.data.tokens import take_contexts
from interp.dictionary import DictionaryConfig, architecture
from interp.analysis.evals import evaluate
from interp.analysis.regression import R2, StreamingLstsq, fit_batches, r2_score
from interp.training.loop import TrainConfig

TINY = "tiny:n_layers=2,d_model=32,n_heads=4,d_mlp=64,n_ctx=64"
HOOK = "blocks.1.hook_resid_pre"


# --- streaming least squares -------------------------------------------------------
def regression_data(n=300, d_in=7, d_out=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64) * torch.linspace(0.2, 3, d_in, dtype=torch.float64) + 1.5
    y = x @ torch.randn(d_in, d_out, generator=g, dtype=torch.float64) + 2.0 + torch.randn(n, d_out, generator=g, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("intercept", [False, True])
def test_streaming_fit_equals_lstsq(intercept):
    x, y = regression_data()
    fit = fit_batches(zip(x.split(37), y.split(37)), intercept=intercept)
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) if intercept else x
    ref = torch.linalg.lstsq(design, y).solution
    assert torch.allclose(fit.weight, ref[: x.shape[1]], atol=1e-10)
    assert torch.allclose(fit.bias, ref[-1] if intercept else torch.zeros(3, dtype=x.dtype), atol=1e-10)
    assert fit.n == len(x) and torch.allclose(fit.predict(x), design @ ref, atol=1e-9)


def test_underdetermined_fit_is_the_minimum_norm_solution():
    x, y = regression_data(n=5, d_in=9)
    fit = StreamingLstsq(9, 3).update(x, y).solve()
    ref = torch.linalg.lstsq(x, y, driver="gelsd").solution
    assert torch.allclose(fit.weight, ref, atol=1e-8)


def test_ridge_equals_its_closed_form():
    x, y = regression_data()
    lam = 25.0
    fit = StreamingLstsq(7, 3).update(x[:100], y[:100]).update(x[100:], y[100:]).solve(lam)
    closed = torch.linalg.inv(x.T @ x + lam * torch.eye(7, dtype=x.dtype)) @ x.T @ y
    assert torch.allclose(fit.weight, closed, atol=1e-10)
    # with an unpenalised intercept, ridge is ridge on centred data plus the mean offset
    fit = fit_batches([(x, y)], intercept=True, ridge=lam)
    xc, yc = x - x.mean(0), y - y.mean(0)
    w = torch.linalg.solve(xc.T @ xc + lam * torch.eye(7, dtype=x.dtype), xc.T @ yc)
    assert torch.allclose(fit.weight, w, atol=1e-9)
    assert torch.allclose(fit.bias, y.mean(0) - x.mean(0) @ w, atol=1e-9)
    assert not torch.allclose(fit.weight, fit_batches([(x, y)], intercept=True).weight, atol=1e-3)  # ridge did something


def test_r2_definitions_match_a_direct_computation():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(200, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 5.0, 0.5], dtype=torch.float64) + 3
    p = y + torch.randn(200, 4, generator=g, dtype=torch.float64)
    acc = R2()
    for yb, pb in zip(y.split(64), p.split(64)):
        acc.update(yb, pb)
    total = 1 - ((y - p) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    per_dim = torch.stack([1 - ((y[:, j] - p[:, j]) ** 2).sum() / ((y[:, j] - y[:, j].mean()) ** 2).sum() for j in range(4)])
    assert abs(acc.total() - total.item()) < 1e-12
    assert torch.allclose(acc.per_dim(), per_dim, atol=1e-12) and abs(acc.mean_per_dim() - per_dim.mean().item()) < 1e-12
    assert abs(acc.total() - acc.mean_per_dim()) > 0.05  # the two definitions differ on uneven dimensions
    assert r2_score(y[:, 0], y[:, 0]) == 1.0 and abs(r2_score(y[:, 0], torch.full_like(y[:, 0], y[:, 0].mean().item()))) < 1e-12


# --- a planted decomposition ---------------------------------------------------------
def planted(n=6000, d=16, m=8, seed=0):
    """x = s @ D + z with D orthonormal (m features), z a dense Gaussian in D's complement.

    The SAE is an oracle for s (so its error is exactly z, all linear in x); `distorted`
    additionally adds h(s) u to its output, where h = (s_0 - mu)(s_1 - mu) is uncorrelated
    with every linear function of x: a planted nonlinear error of -h u.
    """
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    D, C = q[:, :m].T, q[:, m:].T  # [m, d] features, [d - m, d] the complement
    active = torch.rand(n, m, generator=g, dtype=torch.float64) < 0.3
    s = active * (1 + torch.rand(n, m, generator=g, dtype=torch.float64))
    z = (torch.randn(n, d - m, generator=g, dtype=torch.float64) * torch.linspace(0.3, 1.0, d - m, dtype=torch.float64)) @ C
    sae = random_dictionary("topk", d_in=d, d_dict=m, k=m)
    with torch.no_grad():
        sae.W_enc.copy_(D.T), sae.W_dec.copy_(D), sae.b_enc.zero_(), sae.b_dec.zero_()
    mu = 0.3 * 1.5
    u = C[0]

    def h(codes):
        return (codes[:, 0] - mu) * (codes[:, 1] - mu)

    def distorted(x):
        return sae(x) + h(sae.encode(x))[:, None] * u

    return {"x": s @ D + z, "s": s, "z": z, "sae": sae, "distorted": distorted, "nonlinear": -h(s)[:, None] * u, "C": C}


def test_planted_linear_and_nonlinear_parts_are_recovered():
    p = planted()
    x, train, test = p["x"], slice(0, 4000), slice(4000, None)
    # an exact sparse dictionary: its whole error is the dense complement, and linear
    fit = dm.fit_linear_error(p["sae"], x[train].split(1000))
    c = dm.components(p["sae"], fit, x[test])
    assert torch.allclose(c["error"], p["z"][test], atol=1e-10) and c["nonlinear"].abs().max() < 1e-8
    assert torch.allclose(fit.weight, p["C"].T @ p["C"], atol=1e-8)  # a = the projection onto the complement
    score = dm.score_linear_error(p["sae"], fit, x[test].split(500))
    assert score["error_r2"] > 1 - 1e-10 and score["linear_share"] > 1 - 1e-10 and score["fvu_nonlinear"] < 1e-12
    # with an introduced nonlinear error, the fit still finds the planted linear part and leaves the rest
    fit = dm.fit_linear_error(p["distorted"], x[train].split(1000))
    c = dm.components(p["distorted"], fit, x[test])
    planted_lin, planted_nl = p["z"][test], p["nonlinear"][test]
    assert (c["linear"] - planted_lin).norm() / planted_lin.norm() < 0.03
    assert (c["nonlinear"] - planted_nl).norm() / planted_nl.norm() < 0.2
    assert torch.allclose(c["recon"] + c["linear"] + c["nonlinear"], x[test], atol=1e-10)
    score = dm.score_linear_error(p["distorted"], fit, x[test].split(500))
    var_lin = (planted_lin - planted_lin.mean(0)).pow(2).sum()
    var_nl = (planted_nl - planted_nl.mean(0)).pow(2).sum()
    assert abs(score["error_r2"] - (var_lin / (var_lin + var_nl)).item()) < 0.01
    assert 0.3 < score["error_r2"] < 0.95  # the planted split is far from all-or-nothing


def test_training_split_is_orthogonal():
    """In-sample, least squares makes the nonlinear part orthogonal to the linear one: norms add up."""
    p = planted(n=2000)
    fit = dm.fit_linear_error(p["distorted"], [p["x"]])
    c = dm.components(p["distorted"], fit, p["x"])
    e, lin, nl = (c[k].pow(2).sum() for k in ("error", "linear", "nonlinear"))
    assert abs((e - lin - nl) / e) < 1e-9


def test_norm_prediction_and_baselines():
    p = planted(n=3000)
    x = p["x"]
    token = (p["s"][:, 0] > 0).long() + 2 * (p["s"][:, 1] > 0).long()  # a "token id" that knows two features
    rows = [dm.Rows(x[a:b], token[a:b], torch.rand(b - a, dtype=torch.float64)) for a, b in ((0, 2000), (2000, 3000))]
    fit = dm.fit_linear_error(p["distorted"], [rows[0].x])
    sae = p["sae"]  # L0 from the oracle codes; the error norms from the oracle too
    out = dm.norm_prediction(sae, fit, rows[0], rows[1])
    r2 = {(r["target"], r["predictor"]): r["r2"] for r in out["rows"]}
    assert {k[1] for k in r2} == {"x (linear)", "token identity", "loss", "L0", "||x||"}
    # direct check of the x-based prediction of ||e||^2
    e2 = lambda r: dm.token_norms(sae, fit, r.x)["error"]  # noqa: E731
    design = lambda r: torch.cat([r.x, torch.ones(len(r), 1, dtype=r.x.dtype)], 1)  # noqa: E731
    coef = torch.linalg.lstsq(design(rows[0]), e2(rows[0])[:, None]).solution
    assert abs(r2[("||e||^2", "x (linear)")] - r2_score(e2(rows[1]), design(rows[1]) @ coef[:, 0])) < 1e-8
    assert abs(r2[("||e||^2", "loss")]) < 0.02  # random losses predict nothing
    assert torch.allclose(out["actual"], e2(rows[1]))
    no_loss = dm.norm_prediction(sae, fit, dm.Rows(rows[0].x, rows[0].token), dm.Rows(rows[1].x, rows[1].token))
    assert "loss" not in {r["predictor"] for r in no_loss["rows"]}


def test_token_mean_baseline_by_hand():
    pred = dm.token_mean_predict(torch.tensor([0, 0, 2]), torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 2, 1]))
    assert pred.tolist() == [2.0, 5.0, 3.0]  # token 1 unseen: the overall mean


def test_scaling_matrix():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1500, 8, generator=g, dtype=torch.float64)
    saes = {f"w{w}": random_dictionary("topk", d_in=8, d_dict=w, seed=w, k=3) for w in (32, 16)}
    fits = {n: dm.fit_linear_error(s, [x[:1000]]) for n, s in saes.items()}
    out = dm.scaling(saes, fits, dm.Rows(x[:1000], torch.zeros(1000).long()), dm.Rows(x[1000:], torch.zeros(500).long()))
    assert out["names"] == ["w16", "w32"]
    assert abs(out["r2"][0][0] - 1) < 1e-9 and abs(out["r2"][1][1] - 1) < 1e-9
    n = {k: dm.token_norms(saes[k], fits[k], x)["error"] for k in saes}
    design = torch.stack([n["w16"][:1000], torch.ones(1000, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(design, n["w32"][:1000, None]).solution[:, 0]
    assert abs(out["r2"][0][1] - r2_score(n["w32"][1000:], n["w16"][1000:] * coef[0] + coef[1])) < 1e-9
    (row,) = out["rows"]
    assert row["smaller"] == "w16" and row["r2_with_nonlinear_norm"] >= row["r2_error_norm"] - 0.01


# --- reducing the nonlinear error ---------------------------------------------------
def test_gradient_pursuit_recovers_orthonormal_codes_at_the_sae_l0():
    p = planted(n=200)
    x = p["s"] @ p["sae"].W_dec
    codes = dm.gradient_pursuit(p["sae"], x)
    assert torch.allclose(codes, p["s"], atol=1e-10)
    # an overcomplete dictionary: L0 never exceeds the target, and the residual shrinks with more steps
    sae = random_dictionary("topk", d_in=8, d_dict=32, k=3)
    x = torch.randn(100, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    l0 = torch.randint(1, 6, (100,), generator=torch.Generator().manual_seed(3))
    codes = dm.gradient_pursuit(sae, x, l0)
    assert ((codes != 0).sum(-1) <= l0).all() and (codes >= 0).all()
    err = lambda c: (x - sae.decode(c)).norm(dim=-1)  # noqa: E731
    assert (err(codes) <= err(dm.gradient_pursuit(sae, x, l0.clamp(max=1))) + 1e-9).all()


def slow_pursuit(atoms, target, steps):
    """One row at a time, as the algorithm reads: grow the support, line-search the restricted gradient, clip at 0."""
    w = torch.zeros(len(atoms), dtype=atoms.dtype)
    for _ in range(steps):
        resid = target - w @ atoms
        inner = atoms @ resid
        support = w != 0
        support[int(inner.argmax())] = True
        grad = torch.where(support, inner, 0.0)
        c = grad @ atoms
        if c @ c == 0:  # every atom points away from the residual: nothing left to add
            break
        w = torch.clamp(w + (c @ resid) / (c @ c) * grad, min=0)
    return w


def test_gradient_pursuit_matches_a_row_by_row_reference():
    sae = random_dictionary("topk", d_in=8, d_dict=12, k=6, seed=4)  # a setting where clipping at zero happens
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    l0 = torch.full((200,), 6)
    l0[1::3] = 2
    norms = sae.W_dec.norm(dim=1)
    ref = torch.stack([slow_pursuit(sae.W_dec / norms[:, None], x[i] - sae.b_dec, int(l0[i])) for i in range(200)]) / norms
    assert torch.allclose(dm.gradient_pursuit(sae, x, l0), ref, atol=1e-10)


def test_explain_nonlinear_with_features_that_hold_it():
    p = planted(n=3000)
    x, nl = p["x"], p["nonlinear"]
    fit = dm.fit_linear_error(p["distorted"], [x[:2000]])
    noise = torch.randn(3000, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    holds = torch.cat([noise, nl @ torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))], 1)
    good = dm.explain_nonlinear(p["distorted"], fit, x[:2000], holds[:2000], x[2000:], holds[2000:])
    bad = dm.explain_nonlinear(p["distorted"], fit, x[:2000], noise[:2000], x[2000:], noise[2000:])
    assert good["nonlinear_norm_removed"] > 0.9 and abs(bad["nonlinear_norm_removed"]) < 0.05
    # x itself holds no nonlinear error, however it is mixed into z
    mixed = x @ torch.randn(16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    none = dm.explain_nonlinear(p["distorted"], fit, x[:2000], mixed[:2000], x[2000:], mixed[2000:])
    assert abs(none["nonlinear_norm_removed"]) < 0.05


def test_sae_trained_on_sparse_component_beats_one_on_noise():
    p = planted(n=3000)
    dense = torch.randn(3000, 16, generator=torch.Generator().manual_seed(0))
    comps = {"sparse": (p["s"] @ p["sae"].W_dec).float(), "dense": dense}
    cfg = TrainConfig(tokens=256 * 60, lr=1e-2)
    make = lambda: architecture("topk")(DictionaryConfig(arch="topk", d_in=16, d_dict=16, k=3))  # noqa: E731
    rows, trained = dm.train_on_components(make, {k: v[:2000] for k, v in comps.items()},
                                           {k: v[2000:] for k, v in comps.items()}, cfg, batch_size=256)
    fvu = {r["component"]: r["fvu"] for r in rows}
    assert all(r["l0"] <= 3 for r in rows) and fvu["sparse"] < 0.5 * fvu["dense"]
    assert set(trained) == {"sparse", "dense"}


# --- with a model ------------------------------------------------------------------
def float_sae(seed=0, d_dict=64, k=8, hook=HOOK):
    d = random_dictionary("topk", d_in=32, d_dict=d_dict, seed=seed, dtype="float32", k=k, hook_in=hook, model=TINY)
    with torch.no_grad():
        d.W_dec.mul_(0.3)
    return d


def test_collect_and_ce_table_agree_with_evaluate(tiny):
    toks = take_contexts(tiny, "shakespeare", "validation", 32, 6)
    rows = dm.collect(tiny, HOOK, toks, batch_size=4)
    assert len(rows) == 6 * 31 and rows.x.shape == (186, 32) and torch.isfinite(rows.loss).all()
    fast = dm.collect(tiny, HOOK, toks, with_loss=False)
    torch.testing.assert_close(fast.x, rows.x)  # batches of 8 vs 4: equal up to the BLAS's rounding
    assert fast.loss is None
    sae = float_sae()
    fit = dm.fit_linear_error(sae, [rows.x])
    table = {r["splice"]: r["ce"] for r in dm.ce_table(tiny, sae, fit, HOOK, toks, batch_size=4)}
    metrics, _ = evaluate(tiny, sae, toks, batch_size=4)
    assert abs(table["clean (x)"] - metrics["ce_loss_clean"]) < 1e-5
    assert abs(table["SAE(x)"] - metrics["ce_loss_spliced"]) < 1e-5
    assert len({round(v, 6) for v in table.values()}) == 4
    # the loss collected per (non-BOS) token is the clean model's CE on it: the same set evaluate scores
    assert abs(rows.loss.double().mean().item() - metrics["ce_loss_clean"]) < 1e-5


def test_cli_writes_a_report(tmp_path, capsys):
    from interp.cli import darkmatter_command as cmd

    runs = [str(float_sae(seed=i, d_dict=width).save(tmp_path / f"w{width}")) for i, width in enumerate((32, 64))]
    prev = float_sae(seed=9, hook="blocks.0.hook_resid_pre").save(tmp_path / "prev")
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    args = parser.parse_args([*runs, "--n-ctx", "32", "--train-contexts", "16", "--eval-contexts", "4", "--ce-contexts", "2",
                              "--pursuit-tokens", "50", "--previous", str(prev), "--ridge", "0.1",
                              "--out", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json")])
    assert cmd.run(args) == 0
    page = (tmp_path / "r.html").read_text()
    for text in ("Dark matter", "Scaling across widths", "Downstream loss", "Gradient pursuit", "previous layer", "token identity"):
        assert text in page
    assert "w32: {" in capsys.readouterr().out and (tmp_path / "r.json").stat().st_size > 100


def test_cli_rejects_saes_on_different_hooks(tmp_path):
    from interp.cli import darkmatter_command as cmd

    runs = [str(float_sae(hook=h).save(tmp_path / str(i))) for i, h in enumerate((HOOK, "blocks.0.hook_resid_pre"))]
    with pytest.raises(ValueError, match="every SAE must read and write"):
        cmd._load_saes(runs, "cpu")


def test_figures_draw_from_returned_data():
    from interp.viz import darkmatter as viz

    scores = {"a": {"fvu": 0.3, "fvu_nonlinear": 0.1}}
    assert [t.y[0] for t in viz.variance_bars(scores).data] == [0.7, pytest.approx(0.2), 0.1]
    fig = viz.scaling_heatmap({"names": ["a", "b"], "r2": [[1, 0.5], [0.4, 1]], "rows": []})
    assert isinstance(fig, go.Figure) and fig.data[0].z[0][1] == 0.5
    fig = viz.norm_scatter(torch.arange(10.0), torch.arange(10.0), max_points=5)
    assert len(fig.data[0].x) == 5
