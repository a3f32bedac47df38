"""Figures for the interaction basis, drawn from `interp.analysis.interaction` results (nothing is computed here
beyond choosing what to show)."""

from __future__ import annotations

import plotly.graph_objects as go
import torch


def spectrum_figure(result, kind: str = "lib", title: str = "Interaction-basis eigenvalues") -> go.Figure:
    """Eigenvalues per node layer (log scale), constant direction left out; kind: lib, pca or neuron."""
    fig = go.Figure()
    for node in result.nodes[:-1]:
        basis = getattr(result, kind)[node]
        vals = basis.eigenvalues[int(basis.constant):].clamp_min(1e-30)
        fig.add_trace(go.Scatter(y=vals.tolist(), mode="lines+markers", name=node, marker={"size": 3}))
    fig.update_layout(title=title, xaxis_title="direction (sorted)", yaxis_title="eigenvalue", yaxis_type="log",
                      template="plotly_white")
    return fig


def ablation_figure(curves: dict[str, list[dict]], metric: str = "accuracy", title: str = "", reference: float | None = None) -> go.Figure:
    """One line per curve label (e.g. 'LIB', 'PCA'): `metric` against the number of kept directions or edges."""
    fig = go.Figure()
    for label, rows in curves.items():
        fig.add_trace(go.Scatter(x=[r["n"] for r in rows], y=[r[metric] for r in rows], mode="lines+markers", name=label))
    if reference is not None:
        fig.add_hline(y=reference, line_dash="dot", annotation_text="unablated")
    fig.update_layout(title=title, xaxis_title="kept", yaxis_title=metric, xaxis_type="log", template="plotly_white")
    return fig


def graph_figure(result, top_directions: int = 10, top_edges: int = 60, title: str = "Interaction graph") -> go.Figure:
    """Node layers left to right; nodes are the top LIB directions sized by sqrt(Lambda), edges the strongest
    E_ij among them, width by sqrt(E) relative to the strongest shown."""
    fig, pos = go.Figure(), {}
    for x, node in enumerate(result.nodes):
        basis = result.lib[node]
        first = int(basis.constant)
        lam = basis.eigenvalues[first:first + top_directions]
        if len(lam) == 0:
            continue
        for i in range(len(lam)):
            pos[(node, first + i)] = (x, -i)
        size = (lam.clamp_min(0).sqrt() / lam.clamp_min(0).sqrt().max().clamp_min(1e-30) * 25 + 4).tolist()
        fig.add_trace(go.Scatter(x=[x] * len(lam), y=[-i for i in range(len(lam))], mode="markers", name=node,
                                 marker={"size": size}, text=[f"{node} #{first + i}: Λ={v:.3g}" for i, v in enumerate(lam.tolist())],
                                 hoverinfo="text"))
    lines = []
    for name, E in result.edges.items():
        a, b = name.split("->")
        for i, j in _top_pairs(E, top_edges):
            if (a, j) in pos and (b, i) in pos:
                lines.append((float(E[i, j]), pos[(a, j)], pos[(b, i)]))
    strongest = max((w for w, _, _ in lines), default=1.0)
    for w, (x0, y0), (x1, y1) in lines:
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="skip",
                                 line={"width": 0.5 + 6 * (w / strongest) ** 0.5, "color": "rgba(60,60,160,0.5)"}))
    fig.update_layout(title=title, template="plotly_white", xaxis={"tickvals": list(range(len(result.nodes))),
                      "ticktext": result.nodes}, yaxis={"visible": False})
    return fig


def _top_pairs(E: torch.Tensor, k: int) -> list[tuple[int, int]]:
    flat = E.flatten().argsort(descending=True)[:k]
    return [(int(f) // E.shape[1], int(f) % E.shape[1]) for f in flat]


def lib_report(result, summary: dict, title: str = "Interaction basis"):
    """A self-contained HTML report (`interp.viz.report.Report`) of a build and its ablation summary."""
    from interp.viz.report import Report

    rep = Report(title)
    rep.add_heading("Build")
    rep.add_table([{"node": n, "LIB directions": result.lib[n].n, "PCA directions": result.pca[n].n,
                    "seconds": result.seconds.get(n, 0.0)} for n in result.nodes])
    rep.add_text(f"Total build time {result.seconds['total']:.1f} s; config: {result.cfg}.")
    rep.add_figure(spectrum_figure(result), "LIB eigenvalues Lambda per node layer (constant direction left out).")
    clean = summary["clean"]
    rep.add_heading("Ablations")
    rep.add_text(f"Unablated: loss {clean['loss']:.4g}, accuracy {clean['accuracy']:.4g}. Directions not kept are "
                 "mean-ablated (zeroed in the centred basis).")
    rows = []
    for node, kinds in summary["directions"].items():
        row = {"node": node}
        for kind, info in kinds.items():
            row[f"{kind} dims"] = info["dims"]
            row[f"{kind} n (95% acc)"] = str(info["n_for_accuracy"])
            row[f"{kind} n (loss+1e-3)"] = str(info["n_for_loss"])
        rows.append(row)
        rep.add_figure(ablation_figure({k.upper(): v["curve"] for k, v in kinds.items()}, "accuracy", f"Directions kept at {node}",
                                       clean["accuracy"]))
    rep.add_table(rows)
    if summary["edges"]:
        rep.add_heading("Edges")
        rep.add_table([{"pair": name, "edges": info["total"], "n (loss within 1e-3)": str(info["n_for_loss"])}
                       for name, info in summary["edges"].items()])
        rep.add_figure(ablation_figure({n: v["curve"] for n, v in summary["edges"].items()}, "loss", "Edges kept", clean["loss"]))
        rep.add_figure(graph_figure(result), "Top LIB directions per node (size ~ sqrt(Lambda)) and strongest edges.")
    return rep
