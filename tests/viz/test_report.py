import plotly.graph_objects as go
import pytest

from interp.viz.report import Report


def test_report_escapes_every_string_and_embeds_figures(tmp_path):
    evil = '<script>alert("x")</script> & \'quotes\''
    page = (Report(evil).add_heading(evil).add_text(evil).add_code(evil)
            .add_table([{evil: evil, "fvu": 0.123456789}]).add_figure(go.Figure(go.Bar(x=[1], y=[2])), caption=evil))
    out = page.write(tmp_path / "r.html").read_text()
    assert evil not in out and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in out
    assert "0.1235" in out and out.count("Plotly.newPlot") == 1
    assert "cdn" not in out.split("<body>")[1].lower()  # nothing fetched at view time


def test_sections_render_as_known_markup():
    page = (Report("T").add_heading("H", 3).add_table([{"a": 0.5, "b": "x"}, {"b": 2}], digits=2).add_element("e", "span")
            .add_data("d", {"k": "<>"}).html())
    body = page.split("<h1>T</h1>")[1]
    assert body == ("<h3>H</h3><table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>0.5</td><td>x</td></tr>"
                    '<tr><td></td><td>2</td></tr></tbody></table><span id="e" class=""></span>'
                    '<script type="application/json" id="d">{"k": "\\u003c\\u003e"}</script></body></html>')
    for bad in (lambda r: r.add_heading("x", 7), lambda r: r.add_element("e", 'div onclick="x"'),
                lambda r: r.add_script("</script>"), lambda r: r.add_style("</style>")):
        with pytest.raises(ValueError):
            bad(Report("T"))


def test_every_shown_string_has_its_hidden_characters_escaped_and_prose_keeps_its_layout():
    spoof = "x\u202ey\u200b"
    page = (Report(spoof).add_heading(spoof).add_text(f"one\n{spoof}").add_code(f"a\n\tb{spoof}")
            .add_table([{spoof: spoof}]).add_figure(go.Figure(), caption=spoof).add_data("d", {"s": spoof}).html())
    assert "\u202e" not in page and "\u200b" not in page
    shown = "x\\u202ey\\u200b"
    assert page.count(shown) == 9  # title, h1, h2, p, pre, th, td, caption, and the data island (JSON escapes)
    assert f"<p>one\n{shown}</p>" in page and f"<pre>a\n\tb{shown}</pre>" in page
