import plotly.graph_objects as go

from interp.viz.report import Report


def test_report_escapes_every_string_and_embeds_figures(tmp_path):
    evil = '<script>alert("x")</script> & \'quotes\''
    page = (Report(evil).add_heading(evil).add_text(evil).add_code(evil)
            .add_table([{evil: evil, "fvu": 0.123456789}]).add_figure(go.Figure(go.Bar(x=[1], y=[2])), caption=evil))
    out = page.write(tmp_path / "r.html").read_text()
    assert evil not in out and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in out
    assert "0.1235" in out and out.count("Plotly.newPlot") == 1
    assert "cdn" not in out.split("<body>")[1].lower()  # nothing fetched at view time
