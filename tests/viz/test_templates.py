"""The template environment: what every `{{ value }}` becomes, the line-break rule, data islands, strictness."""

import html
import json

import pytest
from jinja2 import UndefinedError
from markupsafe import Markup

from interp.viz.templates import environment, safe_json, static
from interp.viz.text import visible

HOSTILE = '<script>alert(1)</script> "double" \'single\' & </script> {{ 7 * 7 }}'


def from_string(source: str, **context) -> str:
    return environment().from_string(source).render(**context)


def test_every_value_is_escaped_as_html_escape_does_and_markup_passes_through():
    assert from_string("<p>{{ s }}</p>", s=HOSTILE) == f"<p>{html.escape(HOSTILE)}</p>"
    assert "{{ 7 * 7 }}" in from_string("{{ s }}", s=HOSTILE)  # data is never rendered as a template
    assert from_string("{{ n }}|{{ m }}", n=3, m=Markup("<b>ours</b>")) == "3|<b>ours</b>"
    assert from_string('<a title="{{ s }}">', s='" onclick="x') == '<a title="&quot; onclick=&quot;x">'


def test_filters_format_numbers_and_show_control_characters():
    assert from_string("{{ x|num('.3g') }} {{ x|num('+.1f') }} {{ n|num('d') }}", x=0.123456, n=7) == "0.123 +0.1 7"
    with pytest.raises(TypeError, match="num formats numbers"):
        from_string("{{ s|num('') }}", s="<b>")  # text never skips escaping through num
    assert visible("a\nb\tc\x07\x00") == "a↵b⇥c\\x07\\x00"
    assert from_string("{{ s|visible }}", s="<\x1b>") == "&lt;\\x1b&gt;"


def test_the_visible_filter_is_interp_viz_text_visible():
    for text in ("a\u202eb\u2066c", "\x07\n", "\ud800", "plain <b>"):
        assert from_string("{{ s|visible }}", s=text) == html.escape(visible(text))
    assert from_string("{{ s|visible }}", s="Juliet\u202e") == "Juliet\\u202e"


def test_line_breaks_in_templates_are_dropped_with_their_indentation_but_spaces_are_kept():
    source = "<div>\n  <span>{{ a }}</span>\n  {% if b %}\n    <i>x</i> \n  {% endif %}\n  y\n</div>"
    assert from_string(source, a="A", b=True) == "<div><span>A</span><i>x</i> y</div>"
    assert from_string("{{ s }}", s="one\n  two") == "one\n  two"  # data keeps its own line breaks


def test_tojson_cannot_close_a_script_element():
    data = {"s": HOSTILE, "u": "\u2028\u2029é"}
    island = from_string('<script type="application/json">{{ d|tojson }}</script>', d=data)
    inner = island.removeprefix('<script type="application/json">').removesuffix("</script>")
    assert not set("<>&") & set(inner) and "\u2028" not in inner and json.loads(inner) == data
    assert safe_json(data, ascii=True).isascii() and json.loads(safe_json(data, ascii=True)) == data
    assert json.loads(safe_json([1, "a"])) == [1, "a"] and safe_json({"b": 1, "a": 2}) == '{"b": 1, "a": 2}'


def test_undefined_names_are_errors_and_static_serves_only_css_and_js():
    with pytest.raises(UndefinedError):
        from_string("{{ missing }}")
    assert "function" in static("circuit.js") and not static("report.css").endswith("\n")
    with pytest.raises(ValueError, match="render"):
        static("report.html.j2")
