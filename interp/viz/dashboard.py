"""Feature dashboards drawn from `interp.analysis.features.FeatureStats`: inline in Jupyter
and as a static, offline site.

Token strings are untrusted text: every one goes through `_text` (control
characters made visible, then `html.escape` with quotes) before it reaches
HTML; the site's index data goes through `textContent` in the browser.

- `show_feature(stats, i)`: an object whose `_repr_html_` renders one feature
  without scripts (the histogram is inline SVG), so it displays the same in
  JupyterLab, VS Code, untrusted notebooks and exported HTML;
  `feature_histogram(stats, i)` is the interactive plotly version.
- `show_index(stats)`: features sorted by density with their top tokens;
  `search(stats, text)` finds features whose top tokens contain `text`.
- `write_site(stats, out)`: index.html (plotly.js inlined once, search box,
  table sorted by density) and one small data/f<i>.js per feature, loaded
  lazily when `index.html#f=<i>` is opened; works from file:// with no network.
"""

from __future__ import annotations

import html
import json
import unicodedata
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from interp.config import write_atomic_text
from interp.analysis.features import FeatureStats

_VISIBLE = {"\n": "↵", "\t": "⇥", "\r": "␍"}
STYLE = """.fd{font-family:system-ui,sans-serif;color:#222;font-size:14px}.fd h2{margin:.2em 0}
.fd .cols{display:flex;gap:2em;flex-wrap:wrap}.fd .side{flex:0 0 330px}.fd .main{flex:1 1 500px;min-width:0}
.fd table{border-collapse:collapse;margin:.4em 0}.fd td,.fd th{border:1px solid #ddd;padding:2px 6px;font-size:12px}
.fd .ctx{font-family:ui-monospace,monospace;font-size:12px;white-space:pre;overflow-x:auto;margin:1px 0;padding:2px 0;
border-bottom:1px solid #f0f0f0}.fd .ctx .v{display:inline-block;width:4.5em;color:#666;text-align:right;margin-right:.6em}
.fd .a{border-radius:2px}.fd .hit{outline:1px solid #c40}.fd .pos{color:#06c}.fd .neg{color:#c30}
.fd .bar{display:inline-block;height:9px;background:#69c}.fd .meta{color:#555;font-size:12px}"""


def _text(token: str) -> str:
    """A token string made safe and visible for HTML: newline/tab shown as symbols, other control
    characters as \\xNN, then html.escape (quotes included)."""
    out = "".join(_VISIBLE.get(c, f"\\x{ord(c):02x}" if unicodedata.category(c) in ("Cc", "Cs") else c) for c in token)
    return html.escape(out, quote=True)


def visible(token: str) -> str:
    """The visible form of a token for textContent (no HTML escaping needed there)."""
    return "".join(_VISIBLE.get(c, f"\\x{ord(c):02x}" if unicodedata.category(c) in ("Cc", "Cs") else c) for c in token)


def context_html(stats: FeatureStats, tokens, acts, centre: int, scale: float) -> str:
    """One window of context: tokens [W] ids (-1 padding), acts [W]; the token at `centre` is outlined."""
    parts = []
    for j, (t, a) in enumerate(zip(tokens, acts)):
        if t < 0:
            continue
        text = _text(stats.token(t))
        cls = " hit" if j == centre else ""
        if a > 0 or j == centre:
            alpha = min(1.0, a / scale) if scale > 0 else 0.0
            parts.append(f'<span class="a{cls}" style="background:rgba(255,110,0,{alpha:.2f})" title="{a:.3g}">{text}</span>')
        else:
            parts.append(text)
    return "".join(parts)


def _contexts(stats: FeatureStats, prefix: str, index: tuple, scale: float) -> str:
    values = stats.tensors[f"{prefix}_value"][index].reshape(-1)
    tokens = stats.tensors[f"{prefix}_tokens"][index].reshape(len(values), -1).tolist()
    acts = stats.tensors[f"{prefix}_acts"][index].reshape(len(values), -1).tolist()
    rows = sorted(((v, t, a) for v, t, a in zip(values.tolist(), tokens, acts) if v > 0), key=lambda r: -r[0])
    return "".join(f'<div class="ctx"><span class="v">{v:.3g}</span>{context_html(stats, t, a, stats.meta["left"], scale)}</div>'
                   for v, t, a in rows)


def _logit_table(stats: FeatureStats, i: int) -> str:
    rows = []
    top = zip(stats.tensors["logit_top_ids"][i].tolist(), stats.tensors["logit_top"][i].tolist(),
              stats.tensors["logit_bottom_ids"][i].tolist(), stats.tensors["logit_bottom"][i].tolist())
    for up_id, up, down_id, down in top:
        rows.append(f'<tr><td class="pos">{_text(stats.token(up_id))}</td><td>{up:+.3f}</td>'
                    f'<td class="neg">{_text(stats.token(down_id))}</td><td>{down:+.3f}</td></tr>')
    return ("<h4>Direct logit effect (final norm scale frozen at its mean)</h4><table><tr><th>promoted</th><th></th>"
            f"<th>suppressed</th><th></th></tr>{''.join(rows)}</table>")


def _neighbours(stats: FeatureStats, i: int, links: bool) -> str:
    cells = []
    for j, c in zip(stats.tensors["neighbour_ids"][i].tolist(), stats.tensors["neighbour_cos"][i].tolist()):
        name = f'<a href="#f={j}">{j}</a>' if links else str(j)
        cells.append(f"<tr><td>{name}</td><td>{c:.3f}</td></tr>")
    return f"<h4>Nearest features (decoder cosine)</h4><table><tr><th>feature</th><th>cos</th></tr>{''.join(cells)}</table>"


def _heads(stats: FeatureStats, i: int) -> str:
    if not stats.meta.get("n_heads"):
        return ""
    mean = (stats.tensors["head_sum"][i] / max(1, int(stats.tensors["fires"][i]))).tolist()
    top = max((abs(m) for m in mean), default=0) or 1.0
    rows = "".join(f'<tr><td>H{h}</td><td>{m:+.3f}</td><td><span class="bar" style="width:{100 * abs(m) / top:.0f}px">'
                   f"</span></td></tr>" for h, m in enumerate(mean))
    return ("<h4>Per-head attribution (mean direct contribution to the pre-activation where it fires)</h4>"
            f"<table>{rows}</table>")


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


def _svg_histogram(stats: FeatureStats, i: int, width: int = 320, height: int = 90) -> str:
    x, y = histogram_data(stats, i)
    top = max(y) or 1
    w = width / len(y)
    bars = "".join(f'<rect x="{b * w:.1f}" y="{height - height * c / top:.1f}" width="{w - 1:.1f}" '
                   f'height="{height * c / top:.1f}" fill="#69c"><title>{x[b]:.3g}: {c}</title></rect>' for b, c in enumerate(y))
    return (f'<svg width="{width}" height="{height + 14}" role="img">{bars}<text x="0" y="{height + 12}" font-size="10">0</text>'
            f'<text x="{width}" y="{height + 12}" font-size="10" text-anchor="end">{x[-1] + (x[1] - x[0]) / 2:.3g}</text></svg>')


def feature_html(stats: FeatureStats, i: int, histogram: str = "svg", links: bool = False) -> str:
    """One feature's dashboard as an HTML fragment. histogram: "svg" (inline, no script) or "div"
    (an empty `hist-<i>` div that the site fills with plotly)."""
    if not 0 <= i < stats.d_dict:
        raise IndexError(f"feature {i} out of range: the dictionary has {stats.d_dict} latents.")
    t, m = stats.tensors, stats.meta
    fires = int(t["fires"][i])
    scale = float(t["max_act"][i])
    head = (f'<h2>Feature {i}</h2><p class="meta">density {float(stats.density[i]):.3g} ({fires} of {m["tokens_seen"]} '
            f'tokens) · max {scale:.3g} · mean {float(stats.mean_act[i]):.3g} · {_text(m["arch"])} '
            f'{_text(m["hook_in"])} → {_text(m["hook_out"])}</p>')
    hist = _svg_histogram(stats, i) if histogram == "svg" else f'<div id="hist-{i}" style="height:260px"></div>'
    side = f"<h4>Activation histogram</h4>{hist}{_logit_table(stats, i)}{_heads(stats, i)}{_neighbours(stats, i, links)}"
    if fires == 0:
        main = "<p>This feature never fired on the analysed tokens.</p>"
    else:
        bands = "".join(f"<h4>Samples with activation in [{b / m['bands']:.2f}, {(b + 1) / m['bands']:.2f}) of the running max"
                        f"</h4>{_contexts(stats, 'sample', (i, b), scale)}" for b in reversed(range(m["bands"])))
        main = f"<h4>Top activations</h4>{_contexts(stats, 'top', (i,), scale)}{bands}"
    return (f'<div class="fd" id="feature-{i}">{head}<div class="cols"><div class="side">{side}</div>'
            f'<div class="main">{main}</div></div></div>')


class FeatureView:
    """Jupyter display of one feature (`_repr_html_`); `.figure()` gives the plotly histogram."""

    def __init__(self, stats: FeatureStats, i: int):
        self.stats, self.i = stats, i

    def _repr_html_(self) -> str:
        return f"<style>{STYLE}</style>{feature_html(self.stats, self.i)}"

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
        body = "".join(f"<tr><td>{r['feature']}</td><td>{r['density']:.3g}</td><td>{r['max']:.3g}</td>"
                       f"<td>{' · '.join(_text(t) for t in r['top_tokens'])}</td></tr>" for r in self.rows)
        return (f'<style>{STYLE}</style><div class="fd"><table><tr><th>feature</th><th>density</th><th>max</th>'
                f"<th>top tokens</th></tr>{body}</table></div>")


def show_index(stats: FeatureStats | str | Path, limit: int = 50) -> IndexView:
    """The densest `limit` features with their top tokens, for a notebook."""
    return IndexView(stats if isinstance(stats, FeatureStats) else FeatureStats.load(stats), limit)


def _js(value) -> str:
    """JSON that is safe inside a <script> element and a .js file."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_APP = """const list=document.getElementById('list'),q=document.getElementById('q'),view=document.getElementById('view');
function row(r){const tr=document.createElement('tr');for(const v of [r[0],r[1].toPrecision(3),r[2].toPrecision(3),r[3]]){
const td=document.createElement('td');td.textContent=String(v);tr.appendChild(td);}
tr.className='feature-row';tr.dataset.feature=r[0];tr.onclick=function(){location.hash='f='+r[0];};return tr;}
function render(){const s=q.value.toLowerCase();const out=[];for(const r of INDEX.rows){if(s&&!r[3].toLowerCase().includes(s))continue;
out.push(row(r));if(out.length>=500)break;}list.replaceChildren(...out);
document.getElementById('count').textContent=out.length+' shown of '+INDEX.rows.length;}
window.interpFeature=function(d){view.innerHTML=d.html;const el=document.getElementById('hist-'+d.id);
if(el&&window.Plotly){Plotly.newPlot(el,[{type:'bar',x:d.hist[0],y:d.hist[1],marker:{color:'#69c'}}],
{height:260,margin:{l:40,r:10,t:10,b:40},xaxis:{title:{text:'activation'}},yaxis:{title:{text:'tokens'}},bargap:0.05},
{displayModeBar:false,responsive:true});}};
function load(){const m=location.hash.match(/f=(\\d+)/);if(!m)return;const s=document.createElement('script');
s.src='data/f'+m[1]+'.js';s.onerror=function(){view.textContent='No page for feature '+m[1]+'.';};document.body.appendChild(s);}
window.addEventListener('hashchange',load);q.addEventListener('input',render);render();load();"""


def write_site(stats: FeatureStats, out: str | Path, features: list[int] | None = None, title: str = "") -> Path:
    """Write the static site into `out` (index.html + data/f<i>.js); returns the index path."""
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    rows = index_rows(stats)
    wanted = set(range(stats.d_dict) if features is None else features)
    for i in wanted:
        page = {"id": i, "html": feature_html(stats, i, histogram="div", links=True), "hist": histogram_data(stats, i)}
        write_atomic_text(out / "data" / f"f{i}.js", f"window.interpFeature({_js(page)});\n")
    index = {"rows": [[r["feature"], r["density"], r["max"], " · ".join(visible(t) for t in r["top_tokens"])]
                      for r in rows if r["feature"] in wanted]}
    m = stats.meta
    title = title or f"Features of {m['arch']} at {m['hook_in']}"
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>body{{margin:1em;font-family:system-ui,sans-serif}}#wrap{{display:flex;gap:1.5em}}#nav{{flex:0 0 360px;"
           f"max-height:95vh;overflow-y:auto}}#nav td{{font-size:12px;padding:1px 4px}}.feature-row{{cursor:pointer}}"
           f".feature-row:hover{{background:#eef}}#view{{flex:1;min-width:0}}{STYLE}</style>"
           f"<script>{get_plotlyjs()}</script></head><body><h1>{html.escape(title)}</h1>"
           f"<p class='meta'>{m['tokens_seen']} tokens from {html.escape(str(m['source']))}; features sorted by density. "
           f"Search matches the top activating tokens.</p><div id='wrap'><div id='nav'><input id='q' placeholder='search top tokens'"
           f" style='width:95%'><div id='count'></div><table><thead><tr><th>#</th><th>density</th><th>max</th><th>top tokens</th>"
           f"</tr></thead><tbody id='list'></tbody></table></div><div id='view'><p>Pick a feature.</p></div></div>"
           f"<script>const INDEX={_js(index)};\n{_APP}</script></body></html>")
    write_atomic_text(out / "index.html", doc)
    return out / "index.html"
