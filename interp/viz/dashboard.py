"""Feature dashboards drawn from `interp.analysis.features.FeatureStats`: inline in Jupyter
and as a static, offline site.

Pages are rendered from templates (`templates/feature.html.j2`, `feature_index.html.j2`,
`site.html.j2`) that escape everything; token strings reach them as plain text and go
through the `visible` filter (`interp.viz.text`: hidden characters made visible) before escaping. The
site's index data goes through `textContent` in the browser.

- `show_feature(stats, i)`: an object whose `_repr_html_` renders one feature
  without scripts (the histogram is inline SVG), so it displays the same in
  JupyterLab, VS Code, untrusted notebooks and exported HTML;
  `feature_histogram(stats, i)` is the interactive plotly version.
- `show_index(stats)`: features sorted by density with their top tokens;
  `search(stats, text)` finds features whose top tokens contain `text`.
- `write_site(stats, out)`: index.html (search box, table sorted by density),
  plotly.js written once beside it, and one small data/f<i>.js per feature, loaded
  lazily when `index.html#f=<i>` is opened; works from file:// with no network.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from interp.analysis.features import FeatureStats
from interp.config import write_atomic_text
from interp.viz.templates import render, safe_json
from interp.viz.text import visible

__all__ = ["feature_html", "feature_histogram", "histogram_data", "index_rows", "search", "show_feature", "show_index",
           "visible", "write_site"]
PLOTLY_FILE = "plotly.min.js"


class ContextToken(NamedTuple):
    text: str
    act: float
    hit: bool  # the token the context is centred on
    alpha: float | None  # background opacity; None: not shaded


class Context(NamedTuple):
    value: float
    tokens: list[ContextToken]


def _context_rows(stats: FeatureStats, prefix: str, index: tuple, scale: float) -> list[Context]:
    """The stored contexts at `index` with a value above 0, largest first (padding left out)."""
    values = stats.tensors[f"{prefix}_value"][index].reshape(-1)
    tokens = stats.tensors[f"{prefix}_tokens"][index].reshape(len(values), -1).tolist()
    acts = stats.tensors[f"{prefix}_acts"][index].reshape(len(values), -1).tolist()
    rows = sorted(((v, t, a) for v, t, a in zip(values.tolist(), tokens, acts) if v > 0), key=lambda r: -r[0])
    centre = stats.meta["left"]
    shade = lambda a: min(1.0, a / scale) if scale > 0 else 0.0  # noqa: E731
    return [Context(v, [ContextToken(stats.token(t), a, j == centre, shade(a) if a > 0 or j == centre else None)
                        for j, (t, a) in enumerate(zip(ids, window)) if t >= 0])
            for v, ids, window in rows]


def _heads(stats: FeatureStats, i: int) -> list[tuple[int, float, float]]:
    """(head, mean direct contribution where the feature fires, bar width in px); empty without heads."""
    if not stats.meta.get("n_heads"):
        return []
    mean = (stats.tensors["head_sum"][i] / max(1, int(stats.tensors["fires"][i]))).tolist()
    top = max((abs(m) for m in mean), default=0) or 1.0
    return [(h, m, 100 * abs(m) / top) for h, m in enumerate(mean)]


def histogram_data(stats: FeatureStats, i: int) -> tuple[list[float], list[int]]:
    """(bin centres, counts) of the latent's non-zero activations."""
    counts = stats.tensors["hist"][i].tolist()
    width = float(stats.tensors["hist_upper"][i]) / len(counts)
    return [width * (b + 0.5) for b in range(len(counts))], counts


def feature_histogram(stats: FeatureStats, i: int) -> go.Figure:
    x, y = histogram_data(stats, i)
    fig = go.Figure(go.Bar(x=x, y=y))
    fig.update_layout(title=f"Feature {i}: activations where it fires", xaxis_title="activation", yaxis_title="tokens",
                      template="plotly_white", height=260, margin=dict(l=40, r=10, t=40, b=40), bargap=0.05)
    return fig


def _svg_histogram(stats: FeatureStats, i: int, width: int = 320, height: int = 90) -> dict:
    """Geometry of the inline SVG histogram: one bar per bin (x, y, w, h, centre, count), the upper edge."""
    x, y = histogram_data(stats, i)
    top = max(y) or 1
    w = width / len(y)
    bars = [{"x": b * w, "y": height - height * c / top, "w": w - 1, "h": height * c / top, "centre": x[b], "count": c}
            for b, c in enumerate(y)]
    return {"width": width, "height": height, "bars": bars, "upper": x[-1] + (x[1] - x[0]) / 2}


def _feature_context(stats: FeatureStats, i: int, histogram: str, links: bool) -> dict:
    """Everything `templates/feature.html.j2` shows for feature `i`, as numbers and plain strings."""
    if not 0 <= i < stats.d_dict:
        raise IndexError(f"feature {i} out of range: the dictionary has {stats.d_dict} latents.")
    if histogram not in ("svg", "div"):
        raise ValueError(f"histogram={histogram!r}: expected 'svg' (inline) or 'div' (filled by plotly on the site).")
    t, m = stats.tensors, stats.meta
    scale = float(t["max_act"][i])
    logits = zip(map(stats.token, t["logit_top_ids"][i].tolist()), t["logit_top"][i].tolist(),
                 map(stats.token, t["logit_bottom_ids"][i].tolist()), t["logit_bottom"][i].tolist())
    bands = [{"low": b / m["bands"], "high": (b + 1) / m["bands"], "rows": _context_rows(stats, "sample", (i, b), scale)}
             for b in reversed(range(m["bands"]))]
    return {"i": i, "density": float(stats.density[i]), "fires": int(t["fires"][i]), "tokens_seen": m["tokens_seen"],
            "max": scale, "mean": float(stats.mean_act[i]), "arch": m["arch"], "hook_in": m["hook_in"],
            "hook_out": m["hook_out"], "svg": _svg_histogram(stats, i) if histogram == "svg" else None,
            "logits": list(logits), "heads": _heads(stats, i),
            "neighbours": list(zip(t["neighbour_ids"][i].tolist(), t["neighbour_cos"][i].tolist())), "links": links,
            "top": _context_rows(stats, "top", (i,), scale), "bands": bands}


def feature_html(stats: FeatureStats, i: int, histogram: str = "svg", links: bool = False, style: bool = False) -> str:
    """One feature's dashboard as an HTML fragment. histogram: "svg" (inline, no script) or "div"
    (an empty `hist-<i>` div that the site fills with plotly); style: prepend the dashboard's CSS."""
    return render("feature.html.j2", style=style, **_feature_context(stats, i, histogram, links))


class FeatureView:
    """Jupyter display of one feature (`_repr_html_`); `.figure()` gives the plotly histogram."""

    def __init__(self, stats: FeatureStats, i: int):
        self.stats, self.i = stats, i

    def _repr_html_(self) -> str:
        return feature_html(self.stats, self.i, style=True)

    def figure(self) -> go.Figure:
        return feature_histogram(self.stats, self.i)


def show_feature(stats: FeatureStats | str | Path, i: int) -> FeatureView:
    """Display feature `i` inline in a notebook; `stats` is a FeatureStats or a folder saved by it."""
    return FeatureView(stats if isinstance(stats, FeatureStats) else FeatureStats.load(stats), i)


def index_rows(stats: FeatureStats, top: int = 5) -> list[dict]:
    """One row per feature, sorted by density (densest first): id, density, max activation, top tokens."""
    order = stats.density.argsort(descending=True).tolist()
    return [{"feature": i, "density": float(stats.density[i]), "max": float(stats.tensors["max_act"][i]),
             "top_tokens": [tok for tok, _ in stats.top_tokens(i, top)]} for i in order]


def search(stats: FeatureStats, text: str, top: int = 5) -> list[int]:
    """Features (by density) whose top activating tokens contain `text` (case-insensitive)."""
    text = text.lower()
    return [r["feature"] for r in index_rows(stats, top) if any(text in tok.lower() for tok in r["top_tokens"])]


class IndexView:
    def __init__(self, stats: FeatureStats, limit: int):
        self.rows = index_rows(stats)[:limit]

    def _repr_html_(self) -> str:
        return render("feature_index.html.j2", rows=self.rows)


def show_index(stats: FeatureStats | str | Path, limit: int = 50) -> IndexView:
    """The densest `limit` features with their top tokens, for a notebook."""
    return IndexView(stats if isinstance(stats, FeatureStats) else FeatureStats.load(stats), limit)


def write_site(stats: FeatureStats, out: str | Path, features: list[int] | None = None, title: str = "") -> Path:
    """Write the static site into `out` (index.html, plotly.min.js, data/f<i>.js); returns the index path."""
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    wanted = set(range(stats.d_dict) if features is None else features)
    for i in wanted:
        page = {"id": i, "html": feature_html(stats, i, histogram="div", links=True), "hist": histogram_data(stats, i)}
        write_atomic_text(out / "data" / f"f{i}.js", f"window.interpFeature({safe_json(page, ascii=True)});\n")
    index = {"rows": [[r["feature"], r["density"], r["max"], " · ".join(visible(t) for t in r["top_tokens"])]
                      for r in index_rows(stats) if r["feature"] in wanted]}
    m = stats.meta
    write_atomic_text(out / PLOTLY_FILE, get_plotlyjs())
    page = render("site.html.j2", title=title or f"Features of {m['arch']} at {m['hook_in']}", index=index,
                  tokens_seen=m["tokens_seen"], source=m["source"], plotly_file=PLOTLY_FILE)
    write_atomic_text(out / "index.html", page)
    return out / "index.html"
