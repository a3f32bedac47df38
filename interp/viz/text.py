"""Untrusted text (prompts, token strings) made visible before it is shown.

Invisible and direction-changing characters can make a title or a context
read as something it is not: U+202E (right-to-left override) reverses what
follows, U+2066-U+2069 isolate it, zero-width characters hide joins and
splits. `visible` shows every such character as a Python-style escape
(`\\u202e`) and newline, tab and carriage return as symbols, so what a page
shows is what the string holds; `prose` keeps newline and tab as layout (report text and code blocks).
Neither HTML-escapes: use them before the escaping (as jinja2 filters before autoescape, or before
`html.escape`; `plot_label` does both, for plotly's labels, which it renders as markup).
"""

from __future__ import annotations

import html
import unicodedata

SYMBOLS = {"\n": "↵", "\t": "⇥", "\r": "␍"}
# Unicode categories never shown as themselves: controls, format characters (bidi overrides and isolates,
# zero-width space/joiners, soft hyphen, BOM, tags), surrogates, private use, unassigned, line/paragraph separators.
HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def escape_char(c: str) -> str:
    """One character as \\xNN, \\uNNNN or \\UNNNNNNNN."""
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str, keep: str = "") -> str:
    """`text` with newline/tab/CR as symbols and every hidden character (HIDDEN categories) as an escape;
    printable text, spaces included, and the characters in `keep` are unchanged. Not HTML-escaped."""
    return "".join(c if c in keep else SYMBOLS.get(c) or (escape_char(c) if unicodedata.category(c) in HIDDEN else c)
                   for c in str(text))


def prose(text: str) -> str:
    """`visible` with newlines and tabs kept as layout: for paragraphs and code blocks, not for titles or tokens."""
    return visible(text, keep="\n\t")


def plot_label(text: str) -> str:
    """A title or token string for a plotly label: `visible`, then HTML-escaped (plotly renders labels as markup)."""
    return html.escape(visible(text))
