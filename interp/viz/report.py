"""Self-contained HTML reports: sections of escaped text, tables and plotly
figures, with plotly.js inlined once so the file opens offline.

Every string passed in is treated as untrusted (token strings are) and
escaped; only figures are embedded as HTML, through plotly's own writer.
Interactive pages add a JSON data island (`add_data`: `<`, `>` and `&` are
written as unicode escapes, so no string can close the script element) and the
library's own scripts (`add_script`: code only, never data), which must put
text into the page through `textContent`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from interp.config import write_atomic_text

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f4f4f4}h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
.caption{color:#555;font-size:.9em}pre{background:#f7f7f7;padding:.6em;overflow-x:auto}"""


class Report:
    """Build with add_* calls, then `write(path)` or `html()`."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []
        self.styles: list[str] = [_STYLE]

    def add_heading(self, text: str, level: int = 2) -> Report:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def add_text(self, text: str) -> Report:
        self.parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def add_code(self, text: str) -> Report:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def add_table(self, rows: list[dict], digits: int = 4) -> Report:
        """One row per dict; columns are the union of keys in first-seen order."""
        columns = list(dict.fromkeys(k for r in rows for k in r))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, ''), digits))}</td>" for c in columns) + "</tr>"
                       for r in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def add_figure(self, fig: go.Figure, caption: str = "", div_id: str | None = None) -> Report:
        self.parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id))
        if caption:
            self.parts.append(f'<p class="caption">{html.escape(caption)}</p>')
        return self

    def add_element(self, element_id: str, tag: str = "div", css_class: str = "") -> Report:
        """An empty element for scripts to fill."""
        self.parts.append(f'<{tag} id="{html.escape(element_id)}" class="{html.escape(css_class)}"></{tag}>')
        return self

    def add_data(self, element_id: str, data) -> Report:
        """JSON data readable with JSON.parse(document.getElementById(element_id).textContent)."""
        self.parts.append(f'<script type="application/json" id="{html.escape(element_id)}">{safe_json(data)}</script>')
        return self

    def add_style(self, css: str) -> Report:
        """Trusted CSS shipped with the library."""
        if "<" in css:
            raise ValueError("CSS cannot contain '<'.")
        self.styles.append(css)
        return self

    def add_script(self, code: str) -> Report:
        """Trusted code shipped with the library (never interpolate data into it: use add_data)."""
        if "</script" in code.lower():
            raise ValueError("A script cannot contain '</script'.")
        self.parts.append(f"<script>{code}</script>")
        return self

    def html(self) -> str:
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{''.join(self.styles)}</style><script>{get_plotlyjs()}</script></head><body>"
                f"<h1>{html.escape(self.title)}</h1>{''.join(self.parts)}</body></html>")

    def write(self, path: str | Path) -> Path:
        write_atomic_text(Path(path), self.html())
        return Path(path)


def _fmt(value, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def safe_json(data) -> str:
    """JSON that is safe inside a <script> element: no '<', '>', '&' or line separators appear literally."""
    text = json.dumps(data, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text
