"""The validation section of the circuit report: each ablated node's (or group's) predicted change of each
logit against the measured change (data from `interp.circuits.validation.validate`), and a table of the
top nodes. Token strings and node ids are escaped: plotly renders its labels as markup."""

from __future__ import annotations

import html

import plotly.graph_objects as go


def validation_figure(validation: dict, height: int = 480) -> go.Figure:
    """Predicted (x) vs measured (y) change of each demeaned logit: one colour per logit, circles for single
    nodes, diamonds for groups, the diagonal where the graph is exactly right."""
    fig = go.Figure()
    candidates = [(row, "circle") for row in validation["nodes"]] + [(row, "diamond") for row in validation["groups"]]
    values = [v for row, _ in candidates for v in row["predicted"] + row["measured"]]
    for j, token in enumerate(validation["logit_strings"]):
        label = html.escape(repr(token))
        fig.add_trace(go.Scatter(
            x=[row["predicted"][j] for row, _ in candidates], y=[row["measured"][j] for row, _ in candidates],
            mode="markers", name=label, marker={"symbol": [s for _, s in candidates], "size": 9, "opacity": 0.8},
            hoverinfo="text", hovertext=[html.escape(f"{_ids(row)} -> {token!r}: predicted {row['predicted'][j]:.3g}, "
                                                     f"measured {row['measured'][j]:.3g}") for row, _ in candidates]))
    if values:
        lo, hi = min(values), max(values)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="measured = predicted", hoverinfo="skip",
                                 line={"dash": "dot", "color": "#888"}))
    where = "the real model" if validation["attention"] == "recomputed" else "the frozen replacement model"
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 30, "b": 50}, plot_bgcolor="white",
                      xaxis={"title": "predicted by the graph", "zeroline": True, "gridcolor": "#eee"},
                      yaxis={"title": f"measured in {where}", "zeroline": True, "gridcolor": "#eee"})
    return fig


def add_validation(report, validation: dict, rows: int = 12):
    """Append the validation heading, summary, scatter and a table of the top nodes to a `Report`."""
    correlation = validation["correlation"]
    report.add_heading("Validation: ablating the top nodes")
    report.add_text(
        f"The {validation['n_nodes']} most influential feature nodes were ablated one at a time (circles) and the top "
        f"2, 4, 8, ... together (diamonds); each point is one logit's change (logit minus mean logit) as the graph "
        f"predicts it and as measured. Over single nodes and logits: correlation "
        f"{'undefined' if correlation is None else f'{correlation:.3f}'}, same sign "
        f"{validation['sign_agreement']:.0%}; {validation['seconds']:.1f} s.")
    report.add_figure(validation_figure(validation))
    tokens = validation["logit_strings"]
    report.add_table([{"ablated": _ids(row), "logit": repr(tokens[j]), "predicted": row["predicted"][j],
                       "direct edges": row["predicted_direct"][j], "measured": row["measured"][j]}
                      for row in validation["nodes"][:rows] + validation["groups"] for j in [_largest(row)]])
    return report


def _ids(row: dict) -> str:
    ids = row["ids"]
    return ids[0] if len(ids) == 1 else f"top {len(ids)} ({ids[0]}, ...)"


def _largest(row: dict) -> int:
    """The logit the graph predicts moves most."""
    return max(range(len(row["predicted"])), key=lambda j: abs(row["predicted"][j]))
