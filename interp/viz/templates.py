"""The one place HTML is made: jinja2 templates shipped in `interp/viz/templates/`, rendered with autoescaping.

Every `{{ value }}` in a template is escaped (`html.escape`, quotes included) unless it is `Markup`; only
figure HTML from plotly's own writer and the library's own CSS and scripts (`static`) are marked so. Token
strings, titles, headings and table cells go through the `visible` filter first (`interp.viz.text.visible`:
control, bidi-override and other invisible characters shown as escapes), paragraphs and code blocks through
`prose` (the same, newlines and tabs kept). JSON in a data island goes through `tojson` (`<`, `>`, `&` and
line separators as unicode escapes, so no string can end the script element; `tojson(ascii=True)` escapes
every other non-ASCII character too, so no hidden character is in the page's source). Undefined names are
errors, not empty strings.

Line breaks and the indentation after them in a template are layout for its reader and are not output
(contexts are shown with `white-space:pre`, where a stray newline would show): write a space where one is
meant, before the line break.
"""

from __future__ import annotations

import html
import json
import re
from functools import cache, lru_cache

from jinja2 import Environment, PackageLoader, StrictUndefined
from jinja2.ext import Extension
from jinja2.lexer import Token
from markupsafe import Markup

from interp.viz.text import prose, visible


class _DropLineBreaks(Extension):
    """Remove each line break in a template's own text together with the indentation that follows it."""

    def filter_stream(self, stream):
        for token in stream:
            yield Token(token.lineno, "data", re.sub(r"\n\s*", "", token.value)) if token.type == "data" else token


def _escape(value) -> Markup:
    """What every `{{ value }}` outputs: Markup unchanged, anything else `str()` then `html.escape`d (the
    entities the pages always had, `&quot;` and `&#x27;`; autoescaping then leaves the Markup alone)."""
    if type(value) is str:
        return Markup(html.escape(value))
    return value if hasattr(value, "__html__") else Markup(html.escape(str(value)))


def num(value, spec: str) -> Markup:
    """`format(value, spec)` of a number (digits and signs only: trusted as it is)."""
    if not isinstance(value, (int, float)):
        raise TypeError(f"num formats numbers; got {type(value).__name__} {value!r}: show text as {{{{ text }}}}.")
    return Markup(format(value, spec))


def safe_json(data, ascii: bool = False) -> str:
    """JSON that is safe inside a <script> element or a .js file: no '<', '>', '&' or line separators appear
    literally. ascii=True also writes every other non-ASCII character as a unicode escape."""
    text = json.dumps(data, ensure_ascii=ascii)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


@cache
def environment() -> Environment:
    """The jinja2 environment of `interp.viz` (autoescaping, strict undefined, line breaks dropped)."""
    env = Environment(loader=PackageLoader("interp.viz", "templates"), autoescape=True, undefined=StrictUndefined,
                      finalize=_escape, extensions=[_DropLineBreaks], keep_trailing_newline=False)
    env.filters.update(visible=lru_cache(maxsize=1 << 16)(visible), prose=prose, num=num,
                       tojson=lambda data, ascii=False: Markup(safe_json(data, ascii)))
    env.globals.update(static=static)
    return env


def render(name: str, **context) -> str:
    """Render the template `name` (a file in interp/viz/templates/) with `context`."""
    return environment().get_template(name).render(**context)


def static(name: str) -> Markup:
    """The text of a CSS or JS file shipped in interp/viz/templates/, trusted as the library's own code."""
    if not name.endswith((".css", ".js")):
        raise ValueError(f"static() serves the library's .css and .js files, not {name!r}; render templates with render().")
    source, _, _ = environment().loader.get_source(environment(), name)
    return Markup(source.removesuffix("\n"))
