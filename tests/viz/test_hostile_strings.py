"""A hostile token string given to every template and view ends up escaped: the page has exactly the elements
and attributes it has with a harmless string in the same places, and the hostile text is shown, not run."""

import json
from html.parser import HTMLParser
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch

from viz_helpers import hand_stats
from interp.viz.circuit import circuit_report
from interp.viz.dashboard import feature_html, show_feature, show_index, write_site
from interp.viz.density import density_histogram, write_density_page
from interp.viz.report import Report
from interp.viz.templates import environment

HOSTILE = '<script>alert(1)</script> "dq" \'sq\' </script> & <img src=x onerror=alert(2)>'
HARMLESS = "tok"
SHOWN = "&lt;script&gt;alert(1)&lt;/script&gt; &quot;dq&quot; &#x27;sq&#x27; &lt;/script&gt; &amp; &lt;img"
IN_JSON = "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e"


def structure(page: str) -> list:
    """Every start tag (with its attribute names) and end tag, in order, as an HTML tokenizer sees them
    (script bodies are raw text up to '</script')."""
    tags = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append((tag, sorted(name for name, _ in attrs)))

        def handle_endtag(self, tag):
            tags.append("/" + tag)

    Tags().feed(page)
    return tags


def report_page(s: str, out: Path) -> dict[str, str]:
    page = (Report(s).add_heading(s).add_heading(s, 3).add_text(s).add_code(s).add_table([{s: s, "n": 1.5}])
            .add_figure(go.Figure(go.Bar(x=[s], y=[1])), caption=s, div_id="fig").add_element("el", css_class="a b")
            .add_data("data", {"s": s}).add_script("void 0;"))
    return {"report.html": page.write(out / "r.html").read_text()}


def feature_pages(s: str, out: Path) -> dict[str, str]:
    stats = hand_stats(s, s)
    pages = {f"feature {i} {mode}": feature_html(stats, i, histogram=mode, links=mode == "div")
             for i in range(2) for mode in ("svg", "div")}
    return pages | {"FeatureView": show_feature(stats, 0)._repr_html_(), "IndexView": show_index(stats)._repr_html_()}


def site_pages(s: str, out: Path) -> dict[str, str]:
    index = write_site(hand_stats(s, s), out / "site", title=s)
    pages = {"index.html": index.read_text()}
    for path in sorted((out / "site" / "data").glob("*.js")):
        text = path.read_text()
        assert not set("<>&") & set(text), f"{path.name} holds a raw '<', '>' or '&'"
        pages[path.name] = json.loads(text.removeprefix("window.interpFeature(").removesuffix(");\n"))["html"]
    return pages


def hand_graph(s: str) -> dict:
    """A graph JSON of one token, one feature, one error node and one logit, and its validation; every string `s`."""
    common = {"position": 0, "influence": 0.5, "value": 1.0, "bias": 0.0, "kept": True}
    nodes = [{"id": "tok/0", "kind": "token", "layer": -1, "token": s, **common},
             {"id": "f/0/3/0", "kind": "feature", "layer": 0, "latent": 3, "activation": 2.0, **common},
             {"id": "err/0/0", "kind": "error", "layer": 0, **common},
             {"id": "logit/5", "kind": "logit", "layer": 1, "token": s, "token_id": 5, "probability": 0.5, **common}]
    edges = [{"source": "tok/0", "target": "f/0/3/0", "weight": 0.5}, {"source": "f/0/3/0", "target": "logit/5", "weight": -0.25},
             {"source": "err/0/0", "target": "logit/5", "weight": 0.125}]
    ablation = {"ids": ["f/0/3/0"], "predicted": [0.5], "predicted_direct": [0.25], "measured": [0.4]}
    validation = {"n_nodes": 1, "nodes": [ablation], "groups": [], "logit_strings": [s], "attention": "recomputed",
                  "correlation": None, "sign_agreement": 1.0, "seconds": 0.5}
    return {"prompt": s, "token_strings": [s], "n_layers": 1, "scores": {"replacement": 0.5, "completeness": 0.75},
            "meta": {"seconds": 1.0}, "nodes": nodes, "edges": edges, "validation": validation}


def circuit_page(s: str, out: Path) -> dict[str, str]:
    contexts = {(0, 3): [{"value": 2.0, "tokens": [s, s, s], "acts": [0.0, 2.0, 1.0], "centre": 1}]}
    effects = {(0, 3): ([[s, 0.5]], [[s, -0.5]])}
    circuit_report(hand_graph(s), out / "c.html", contexts, effects, title=s)
    return {"circuit.html": (out / "c.html").read_text()}


def density_page(s: str, out: Path) -> dict[str, str]:
    return {"density.html": write_density_page(out / "d.html", torch.tensor([0.0, 0.1, 0.5]), title=s).read_text()}


VIEWS = {"report": report_page, "features": feature_pages, "site": site_pages, "circuit": circuit_page,
         "density": density_page}


@pytest.mark.parametrize("view", VIEWS)
def test_hostile_strings_are_shown_never_run(view, tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    harmless, hostile = VIEWS[view](HARMLESS, tmp_path / "a"), VIEWS[view](HOSTILE, tmp_path / "b")
    assert harmless.keys() == hostile.keys()
    for name, page in hostile.items():
        assert structure(page) == structure(harmless[name]), f"{view}: {name} gained or lost an element or attribute"
        assert "<script>alert" not in page and "<img" not in page, name
    if view != "density":  # plotly's own page: its JSON escapes '<', '>' as \u003c, \u003e
        assert any(SHOWN in page or IN_JSON in page for page in hostile.values()), f"{view} never shows the string"


def test_every_template_is_rendered_by_a_view_above(tmp_path, monkeypatch):
    env = environment()
    rendered = set()
    get_template = env.get_template
    monkeypatch.setattr(env, "get_template", lambda name, *a, **k: rendered.add(name) or get_template(name, *a, **k))
    for view in VIEWS.values():
        view(HOSTILE, tmp_path)
    shipped = set(env.list_templates(filter_func=lambda name: name.endswith(".j2")))
    assert shipped and shipped <= rendered, f"add a view of {shipped - rendered} to VIEWS"


SPOOF = "Romeo gave a ring to \u202eteiluJ\x07"  # a right-to-left override and a control character


@pytest.mark.parametrize("view", ["report", "features", "site", "circuit"])
def test_titles_and_token_strings_show_hidden_characters(view, tmp_path):
    pages = VIEWS[view](SPOOF, tmp_path)
    for name, page in pages.items():
        assert "\u202e" not in page and "\x07" not in page, name
    assert any("\\u202eteiluJ\\x07" in page for page in pages.values())


def test_plotly_titles_show_hidden_characters_and_escape_markup():
    """plotly decodes its JSON in the browser and renders labels as markup: the title must be made visible and
    escaped before it is handed over."""
    title = density_histogram(torch.tensor([0.0, 0.5]), title=SPOOF + "<b>").layout.title.text
    assert title.startswith("Romeo gave a ring to \\u202eteiluJ\\x07&lt;b&gt; (1 of 2")


def test_ids_and_classes_are_names_never_data():
    for bad in (lambda r: r.add_element(HOSTILE), lambda r: r.add_element("e", css_class='x" onclick="y'),
                lambda r: r.add_element("e", css_class="a\u202e"), lambda r: r.add_data("d x", {}),
                lambda r: r.add_figure(go.Figure(), div_id="<f>")):
        with pytest.raises(ValueError, match="not a plain HTML name"):
            bad(Report("T"))
    assert 'class="a b-2 c_3"' in Report("T").add_element("e", css_class="a b-2 c_3").html()
