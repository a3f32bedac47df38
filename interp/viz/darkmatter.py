"""Figures and a report section for the dark-matter decomposition, drawn from the data
that `interp.analysis.darkmatter` returns (nothing is computed here beyond subsampling)."""

from __future__ import annotations

import plotly.graph_objects as go
import torch

from interp.viz.report import Report

_LAYOUT = {"template": "plotly_white"}


def variance_bars(scores: dict[str, dict]) -> go.Figure:
    """scores {sae: score_linear_error(...)}: x's variance split into SAE, linear error and nonlinear error."""
    names = list(scores)
    explained = [1 - s["fvu"] for s in scores.values()]
    nonlinear = [s["fvu_nonlinear"] for s in scores.values()]
    linear = [s["fvu"] - s["fvu_nonlinear"] for s in scores.values()]
    fig = go.Figure([go.Bar(name="explained by SAE(x)", x=names, y=explained),
                     go.Bar(name="linear error (removed by a^T x)", x=names, y=linear),
                     go.Bar(name="nonlinear error", x=names, y=nonlinear)])
    fig.update_layout(barmode="stack", title="Where the variance of x goes (held-out tokens)",
                      yaxis_title="fraction of the variance of x", **_LAYOUT)
    return fig


def norm_scatter(actual: torch.Tensor, predicted: torch.Tensor, title: str = "", max_points: int = 3000) -> go.Figure:
    """Per-token ||e||^2 against its linear prediction from x (a deterministic subsample)."""
    step = max(1, len(actual) // max_points)
    a, p = actual[::step].tolist(), predicted[::step].tolist()
    hi = max(max(a, default=1.0), max(p, default=1.0))
    fig = go.Figure([go.Scattergl(x=a, y=p, mode="markers", marker={"size": 3, "opacity": 0.4}, name="tokens"),
                     go.Scatter(x=[0, hi], y=[0, hi], mode="lines", line={"dash": "dash", "color": "grey"}, name="y = x")])
    fig.update_layout(title=title or "Predicting ||e||^2 from x", xaxis_title="actual ||e||^2",
                      yaxis_title="predicted from x", **_LAYOUT)
    return fig


def norm_r2_bars(rows_by_sae: dict[str, list[dict]], target: str = "||e||^2") -> go.Figure:
    """rows_by_sae {sae: norm_prediction(...)['rows']}: held-out R^2 of each predictor of `target`."""
    fig = go.Figure()
    for name, rows in rows_by_sae.items():
        rows = [r for r in rows if r["target"] == target]
        fig.add_bar(name=name, x=[r["predictor"] for r in rows], y=[r["r2"] for r in rows])
    fig.update_layout(barmode="group", title=f"Predicting {target} per token (held-out R^2)", yaxis_title="R^2", **_LAYOUT)
    return fig


def scaling_heatmap(scaling: dict) -> go.Figure:
    """scaling(...) result: R^2 of predicting the column SAE's ||e||^2 from the row SAE's."""
    names = scaling["names"]
    text = [[f"{v:.2f}" for v in row] for row in scaling["r2"]]
    fig = go.Figure(go.Heatmap(z=scaling["r2"], x=names, y=names, text=text, texttemplate="%{text}",
                               colorscale="Viridis", zmin=0, zmax=1))
    fig.update_layout(title="Per-token error norms across widths (R^2, row predicts column)",
                      xaxis_title="predicted SAE", yaxis_title="predicting SAE", **_LAYOUT)
    return fig


def ce_bars(tables: dict[str, list[dict]]) -> go.Figure:
    """tables {sae: ce_table(...)}: CE increase over clean for each splice."""
    fig = go.Figure()
    for name, rows in tables.items():
        rows = [r for r in rows if r["splice"] != "clean (x)"]
        fig.add_bar(name=name, x=[r["splice"] for r in rows], y=[r["increase"] for r in rows])
    fig.update_layout(barmode="group", title="Downstream CE increase over the clean model",
                      yaxis_title="CE increase (nats/token)", **_LAYOUT)
    return fig


def component_fvu_bars(rows: list[dict], title: str = "SAEs trained on each error component") -> go.Figure:
    """train_on_components rows: FVU per component at (nearly) equal L0."""
    fig = go.Figure(go.Bar(x=[r["component"] for r in rows], y=[r["fvu"] for r in rows],
                           text=[f"L0 {r['l0']:.1f}" for r in rows], textposition="outside"))
    fig.update_layout(title=title, yaxis_title="FVU on held-out rows", **_LAYOUT)
    return fig


def add_darkmatter_section(report: Report, results: dict) -> Report:
    """Append the dark-matter section to `report` from a results dict with any of the keys
    scores, norms, scaling, ce, pursuit, previous, components (see `interp darkmatter`)."""
    report.add_heading("Dark matter: linear and nonlinear SAE error")
    report.add_text("e = x - SAE(x) is split into a linear part a^T x (least squares from x, fit on training tokens) "
                    "and a nonlinear remainder; every number below is measured on held-out tokens.")
    if "scores" in results:
        report.add_table([{"sae": k, **v} for k, v in results["scores"].items()])
        report.add_figure(variance_bars(results["scores"]), "error_r2: fraction of error variance explained by a^T x; "
                          "linear_share: share of sum ||e||^2 predicted.")
    if "norms" in results:
        rows = {k: v["rows"] for k, v in results["norms"].items()}
        report.add_heading("Predicting the error norm per token", 3)
        report.add_table([{"sae": k, "target": r["target"], "predictor": r["predictor"], "r2": r["r2"]}
                          for k, v in rows.items() for r in v])
        report.add_figure(norm_r2_bars(rows))
        last = list(results["norms"])[-1]
        report.add_figure(norm_scatter(results["norms"][last]["actual"], results["norms"][last]["predicted"],
                                       f"{last}: ||e||^2 predicted from x"))
    if "scaling" in results and len(results["scaling"]["names"]) > 1:
        report.add_heading("Scaling across widths", 3)
        report.add_figure(scaling_heatmap(results["scaling"]))
        report.add_table(results["scaling"]["rows"])
    if "ce" in results:
        report.add_heading("Downstream loss", 3)
        report.add_table([{"sae": k, **r} for k, v in results["ce"].items() for r in v])
        report.add_figure(ce_bars(results["ce"]))
    for key, heading in (("pursuit", "Gradient pursuit with the SAE's decoder"),
                         ("previous", "Nonlinear error explained by the previous layer's SAE"),
                         ("components", "SAEs trained on the linear vs nonlinear error")):
        if key in results:
            report.add_heading(heading, 3)
            report.add_table(results[key])
    return report
