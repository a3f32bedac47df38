"""Attribution graphs drawn with plotly, and the self-contained circuit report.

The graph figure lays nodes out by position (x, the prompt's tokens) and layer
(y: token embeddings at the bottom, logits at the top); edges are coloured by
sign (blue excites, red inhibits) and drawn thicker when larger. The report
adds the scores, the logit attributions and a panel that shows a clicked
node's details: a feature's top activating contexts from the corpus, the
output tokens it promotes and suppresses, its largest inputs and outputs.

Token strings are untrusted: in the figure they are HTML-escaped (plotly
renders its labels as markup); in the panel they reach the page only through
`textContent` (the panel's code is `templates/circuit.js`), from a JSON data
island (`Report.add_data`); everything else goes through the report template.
"""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go

from interp.viz.report import Report
from interp.viz.templates import static
from interp.viz.text import visible
from interp.viz.validation import add_validation

KIND_STYLE = {  # marker symbol, colour
    "token": ("diamond", "#555"),
    "feature": ("circle", "#f28e2b"),
    "error": ("square", "#bbb"),
    "logit": ("triangle-up", "#4e79a7"),
}


def _label(node: dict) -> str:
    if node["kind"] == "feature":
        return f"L{node['layer']} #{node['latent']} @{node['position']}"
    if node["kind"] == "error":
        return f"error L{node['layer']} @{node['position']}"
    if node["kind"] == "token":
        return f"{node['token']!r} @{node['position']}"
    return f"logit {node['token']!r} (p={node['probability']:.3f})"


def layout(graph_json: dict) -> dict[str, tuple[float, float]]:
    """(x, y) of every kept node: x the position (spread within a cell), y the layer (-1 tokens, n_layers logits)."""
    cells: dict[tuple[int, int], list[dict]] = {}
    for node in graph_json["nodes"]:
        if node["kept"]:
            cells.setdefault((node["layer"], node["position"]), []).append(node)
    where = {}
    for (layer, pos), nodes in cells.items():
        nodes.sort(key=lambda n: -n["influence"])
        step = min(0.8 / len(nodes), 0.2)
        for j, node in enumerate(nodes):
            where[node["id"]] = (pos + (j - (len(nodes) - 1) / 2) * step, layer)
    return where


def graph_figure(graph_json: dict, height: int = 700, max_edges: int = 600) -> go.Figure:
    """The pruned graph with its `max_edges` largest edges drawn; each point's customdata is its node id."""
    where = layout(graph_json)
    nodes = {n["id"]: n for n in graph_json["nodes"] if n["kept"]}
    fig = go.Figure()
    edges = [e for e in graph_json["edges"] if e["source"] in where and e["target"] in where]
    edges = sorted(edges, key=lambda e: -abs(e["weight"]))[:max_edges]
    magnitudes = sorted(abs(e["weight"]) for e in edges)
    cuts = [magnitudes[len(magnitudes) // 3], magnitudes[2 * len(magnitudes) // 3]] if edges else []
    for sign, colour in ((1, "rgba(31,119,180,{})"), (-1, "rgba(214,39,40,{})")):
        for bucket, (width, alpha) in enumerate(((0.6, 0.25), (1.4, 0.45), (3.0, 0.7))):
            xs, ys = [], []
            for e in edges:
                b = sum(abs(e["weight"]) >= c for c in cuts)
                if (e["weight"] >= 0) == (sign > 0) and b == bucket:
                    (x0, y0), (x1, y1) = where[e["source"]], where[e["target"]]
                    xs += [x0, x1, None]
                    ys += [y0, y1, None]
            if xs:
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                         line={"width": width, "color": colour.format(alpha)}))
    for kind, (symbol, colour) in KIND_STYLE.items():
        members = [n for n in nodes.values() if n["kind"] == kind]
        if not members:
            continue
        fig.add_trace(go.Scatter(
            x=[where[n["id"]][0] for n in members], y=[where[n["id"]][1] for n in members], mode="markers", name=kind,
            customdata=[n["id"] for n in members], hoverinfo="text",
            hovertext=[html.escape(f"{_label(n)}  influence {n['influence']:.3g}") for n in members],
            marker={"symbol": symbol, "color": colour, "size": 11, "line": {"width": 1, "color": "#333"}}))
    n_layers, tokens = graph_json["n_layers"], graph_json["token_strings"]
    fig.update_layout(
        height=height, margin={"l": 60, "r": 20, "t": 30, "b": 80}, plot_bgcolor="white", clickmode="event",
        legend={"orientation": "h", "y": 1.04},
        xaxis={"tickmode": "array", "tickvals": list(range(len(tokens))),
               "ticktext": [html.escape(visible(t)) for t in tokens],
               "tickangle": -45, "showgrid": False, "zeroline": False},
        yaxis={"tickmode": "array", "tickvals": [-1, *range(n_layers + 1)],
               "ticktext": ["emb", *[f"L{i}" for i in range(n_layers)], "logits"], "showgrid": True, "zeroline": False})
    return fig


def node_details(graph_json: dict, contexts: dict | None = None, logit_effects: dict | None = None, k: int = 6) -> dict:
    """Per kept node: {"title", "facts", "inputs", "outputs", and for features "contexts", "promoted", "suppressed"}."""
    nodes = {n["id"]: n for n in graph_json["nodes"]}
    inputs: dict[str, list] = {}
    outputs: dict[str, list] = {}
    for e in graph_json["edges"]:
        inputs.setdefault(e["target"], []).append((e["weight"], e["source"]))
        outputs.setdefault(e["source"], []).append((e["weight"], e["target"]))
    top = lambda pairs: [[_label(nodes[i]), w] for w, i in sorted(pairs, key=lambda p: -abs(p[0]))[:k]]
    details = {}
    for node in graph_json["nodes"]:
        if not node["kept"]:
            continue
        facts = {"influence": node["influence"], "value": node["value"]}
        if "activation" in node:
            facts["activation"] = node["activation"]
        d = {"title": _label(node), "facts": facts, "inputs": top(inputs.get(node["id"], [])),
             "outputs": top(outputs.get(node["id"], []))}
        key = (node["layer"], node.get("latent"))
        if contexts and key in contexts:
            d["contexts"] = [{**c, "tokens": [visible(t) for t in c["tokens"]]} for c in contexts[key]]
        if logit_effects and key in logit_effects:
            d["promoted"], d["suppressed"] = ([[visible(t), v] for t, v in rows] for rows in logit_effects[key])
        details[node["id"]] = d
    return details


def circuit_report(graph_json: dict, path: str | Path | None = None, contexts: dict | None = None,
                   logit_effects: dict | None = None, title: str = "Attribution graph") -> Report:
    """The report page (written to `path` if given): prompt, scores, logit attributions, the clickable graph."""
    details = node_details(graph_json, contexts, logit_effects)
    logits = [n for n in graph_json["nodes"] if n["kind"] == "logit"]
    kept = [n for n in graph_json["nodes"] if n["kept"]]
    initial = max((n for n in kept if n["kind"] == "feature"), key=lambda n: n["influence"], default=None)
    report = Report(title).add_style(static("circuit.css"))
    report.add_heading("Prompt").add_code(visible(graph_json["prompt"]))
    report.add_table([{"replacement score": graph_json["scores"].get("replacement", float("nan")),
                       "completeness score": graph_json["scores"].get("completeness", float("nan")),
                       "kept nodes": len(kept), "kept edges": len(graph_json["edges"]),
                       "seconds": graph_json["meta"].get("seconds", "")}])
    report.add_heading("Graph")
    report.add_text("Click a node to see its details below the graph. Blue edges excite, red edges inhibit (the 600 "
                    "largest are drawn; the JSON holds all kept edges); rows are layers (embeddings at the bottom, "
                    "logits at the top), columns are token positions.")
    report.add_figure(graph_figure(graph_json), div_id="circuit-graph")
    report.add_element("node-detail")
    report.add_data("circuit-data", {"details": details, "initial": initial["id"] if initial else None})
    report.add_script(static("circuit.js"))
    report.add_heading("Logit attributions")
    report.add_text("The largest direct effects on the most probable logits (logit minus mean logit).")
    top_logits = sorted(logits, key=lambda n: -n["probability"])[:3]
    rows = [{"logit": repr(n["token"]), "probability": n["probability"], "source": src, "direct effect": w}
            for n in top_logits for src, w in details.get(n["id"], {}).get("inputs", [])[:4]]
    report.add_table(rows or [{"logit": repr(n["token"]), "probability": n["probability"]} for n in top_logits])
    if graph_json.get("validation"):
        add_validation(report, graph_json["validation"])
    if path is not None:
        report.write(path)
    return report
