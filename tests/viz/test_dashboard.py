"""Feature dashboards from hand-written statistics: the exact markup of a context, the histogram and head bars,
and the site's files (plotly.js written once, beside the index)."""

import json
import re

from plotly.offline import get_plotlyjs

from viz_helpers import hand_stats
from interp.viz.dashboard import PLOTLY_FILE, feature_html, show_index, write_site


def test_a_context_is_its_tokens_shaded_by_activation_with_nothing_in_between():
    page = feature_html(hand_stats("b"), 0)
    top = page.split("<h4>Top activations</h4>")[1].split("<h4>")[0]
    assert top == ('<div class="ctx"><span class="v">2</span><span class="a hit" style="background:rgba(255,110,0,1.00)" '
                   'title="2">b</span><span class="a" style="background:rgba(255,110,0,0.25)" title="0.5">a</span>c</div>')
    assert "<p>This feature never fired on the analysed tokens.</p>" in feature_html(hand_stats(), 1)


def test_histogram_heads_and_header_show_the_statistics():
    page = feature_html(hand_stats(), 0)
    assert '<p class="meta">density 0.3 (3 of 10 tokens) · max 2 · mean 1.5 · x x → x</p>' in page
    bars = re.findall(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', page)
    assert bars == [("0.0", "45.0", "79.0", "45.0"), ("80.0", "90.0", "79.0", "0.0"), ("160.0", "90.0", "79.0", "0.0"),
                    ("240.0", "0.0", "79.0", "90.0")]  # counts 1, 0, 0, 2 of 90 px
    assert ('<tr><td>H0</td><td>+1.000</td><td><span class="bar" style="width:100px"></span></td></tr>'
            '<tr><td>H1</td><td>-0.500</td><td><span class="bar" style="width:50px"></span></td></tr>') in page
    assert "<td>0</td><td>0.3</td><td>2</td><td>b</td>" in show_index(hand_stats())._repr_html_()


def test_site_writes_plotly_once_and_its_index_as_data(tmp_path):
    index = write_site(hand_stats(), tmp_path / "site")
    page = index.read_text()
    assert (tmp_path / "site" / PLOTLY_FILE).read_text() == get_plotlyjs()
    assert f'<script src="{PLOTLY_FILE}"></script>' in page and len(page) < 10_000  # referenced, not inlined
    assert sorted(p.name for p in (tmp_path / "site" / "data").iterdir()) == ["f0.js", "f1.js"]
    island = re.search(r'<script type="application/json" id="index-data">(.*?)</script>', page).group(1)
    assert json.loads(island) == {"rows": [[0, 0.3, 2.0, "b"], [1, 0.0, 0.0, ""]]}
