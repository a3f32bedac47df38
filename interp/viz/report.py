"""Self-contained HTML reports: sections of text, tables and plotly figures,
with plotly.js inlined once so the file opens offline.

A Report is a list of sections (plain data) rendered by the template
`templates/report.html.j2`, which escapes every string passed in (token
strings are untrusted); only figures are embedded as HTML, through plotly's own
writer. Interactive pages add a JSON data island (`add_data`: `<`, `>` and `&`
are written as unicode escapes, so no string can close the script element) and
the library's own scripts (`add_script`: code only, never data), which must put
text into the page through `textContent`. Titles, headings, table cells and
captions are shown through `visible` (hidden and bidi-override characters as
escapes), paragraphs and code through `prose`; element ids and classes are
the library's own names and are checked, never escaped.
"""

from __future__ import annotations

import re
from pathlib import Path

import plotly.graph_objects as go
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from interp.config import write_atomic_text
from interp.viz.templates import render, safe_json, static

__all__ = ["Report", "safe_json"]
NAME = re.compile(r"[A-Za-z][\w-]*")


def _check_names(what: str, value: str, several: bool = False) -> str:
    """`value` if it is an HTML id / class name (`several`: space-separated names), else a ValueError."""
    names = value.split(" ") if several and value else [value] if not several else []
    if not all(NAME.fullmatch(n) for n in names):
        raise ValueError(f"{what} {value!r} is not a plain HTML name: use letters, digits, '-' and '_', starting "
                         f"with a letter (ids and classes are the library's own names, never data).")
    return value


class Report:
    """Build with add_* calls, then `write(path)` or `html()`."""

    def __init__(self, title: str):
        self.title = title
        self.sections: list[dict] = []
        self.styles: list[Markup] = [static("report.css")]

    def _add(self, kind: str, **section) -> Report:
        self.sections.append({"kind": kind, **section})
        return self

    def add_heading(self, text: str, level: int = 2) -> Report:
        if level not in range(1, 7):
            raise ValueError(f"Heading level {level!r} is not an HTML heading: use 1 to 6 (the title is level 1).")
        return self._add("heading", text=text, level=level)

    def add_text(self, text: str) -> Report:
        return self._add("text", text=text)

    def add_code(self, text: str) -> Report:
        return self._add("code", text=text)

    def add_table(self, rows: list[dict], digits: int = 4) -> Report:
        """One row per dict; columns are the union of keys in first-seen order; floats to `digits` significant digits."""
        columns = list(dict.fromkeys(k for r in rows for k in r))
        cells = [[_fmt(r.get(c, ""), digits) for c in columns] for r in rows]
        return self._add("table", columns=[str(c) for c in columns], rows=cells)

    def add_figure(self, fig: go.Figure, caption: str = "", div_id: str | None = None) -> Report:
        if div_id is not None:
            _check_names("Figure id", div_id)
        html = Markup(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id))
        return self._add("figure", html=html, caption=caption)

    def add_element(self, element_id: str, tag: str = "div", css_class: str = "") -> Report:
        """An empty element for scripts to fill."""
        if not re.fullmatch(r"[a-z][a-z0-9]*", tag):
            raise ValueError(f"Element tag {tag!r} is not a plain HTML tag name: use one like 'div' or 'span'.")
        return self._add("element", id=_check_names("Element id", element_id), tag=tag,
                         css_class=_check_names("Element class", css_class, several=True))

    def add_data(self, element_id: str, data) -> Report:
        """JSON data readable with JSON.parse(document.getElementById(element_id).textContent)."""
        return self._add("data", id=_check_names("Data id", element_id), data=data)

    def add_style(self, css: str) -> Report:
        """Trusted CSS shipped with the library."""
        if "<" in css:
            raise ValueError("CSS cannot contain '<'.")
        self.styles.append(Markup(css))
        return self

    def add_script(self, code: str) -> Report:
        """Trusted code shipped with the library (never interpolate data into it: use add_data)."""
        if "</script" in code.lower():
            raise ValueError("A script cannot contain '</script'.")
        return self._add("script", code=Markup(code))

    def html(self) -> str:
        return render("report.html.j2", title=self.title, styles=self.styles, plotly_js=Markup(get_plotlyjs()),
                      sections=self.sections)

    def write(self, path: str | Path) -> Path:
        write_atomic_text(Path(path), self.html())
        return Path(path)


def _fmt(value, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)
