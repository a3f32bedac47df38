"""Token streams: text from the embedded corpus, local files or the hub, packed
into fixed-length contexts that each start with BOS.

Documents are joined with BOS between them; every BOS position is masked out
of training and metrics (its activations are outliers the model uses as an
attention sink).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from interp.data.corpus import SHAKESPEARE, shakespeare_texts
from interp.model import bos_token_id, encode_text

HOLDOUT_EVERY = 20  # local files without splits: every 20th document is validation
_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".arrow": "arrow", ".csv": "csv"}


def iter_texts(source: str, split: str = "train", text_column: str = "text") -> Iterator[str]:
    """Documents of `source`: "shakespeare", a local file or folder, or a hub dataset name."""
    if source == SHAKESPEARE:
        yield from shakespeare_texts(split)
        return
    import datasets

    path = Path(source)
    if path.exists():
        files = local_files(path)
        builder = _BUILDERS.get(files[0].suffix)
        if builder is None:
            raise ValueError(f"Cannot read {files[0].name}: expected one of {', '.join(_BUILDERS)}.")
        rows = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
        rows = _holdout(rows, split)
    else:
        name, _, config = source.partition(":")
        rows = datasets.load_dataset(name, config or None, split=split, streaming=True)
    for row in rows:
        if text_column not in row:
            raise ValueError(f"{source} has no column {text_column!r}; columns: {sorted(row)}. Use --text-column.")
        yield row[text_column]


def local_files(path: Path) -> list[Path]:
    """The files a local source reads: the file itself, or a folder's text files in order."""
    files = sorted(p for p in path.rglob("*") if p.suffix in _BUILDERS) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"No text files ({', '.join(_BUILDERS)}) under {path}.")
    return files


def _holdout(rows, split: str):
    if split == "train":
        return rows.filter(lambda _, i: i % HOLDOUT_EVERY != HOLDOUT_EVERY - 1, with_indices=True)
    if split in ("validation", "test"):
        return rows.filter(lambda _, i: i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1, with_indices=True)
    raise ValueError(f"Unknown split {split!r} for local files; use 'train' or 'validation'.")


def iter_contexts(model, source: str, split: str, n_ctx: int, text_column: str = "text") -> Iterator[torch.Tensor]:
    """Packed contexts [n_ctx] of token ids, each starting with BOS, documents separated by BOS."""
    if n_ctx < 2:
        raise ValueError(f"n_ctx must be at least 2, got {n_ctx}.")
    bos = bos_token_id(model)
    pending: list[int] = []
    for text in iter_texts(source, split, text_column):
        pending.extend(encode_text(model, text))
        pending.append(bos)
        while len(pending) >= n_ctx - 1:
            yield torch.tensor([bos] + pending[: n_ctx - 1])
            pending = pending[n_ctx - 1:]


def take_contexts(model, source: str, split: str, n_ctx: int, n: int, skip: int = 0, text_column: str = "text") -> torch.Tensor:
    """Contexts skip..skip+n as [n', n_ctx] (n' < n when the source runs out)."""
    out = []
    for i, ctx in enumerate(iter_contexts(model, source, split, n_ctx, text_column)):
        if i >= skip + n:
            break
        if i >= skip:
            out.append(ctx)
    if not out:
        raise ValueError(f"{source} ({split}) yields no context of {n_ctx} tokens after skipping {skip}.")
    return torch.stack(out)


def token_mask(model, tokens: torch.Tensor) -> torch.Tensor:
    """True where a position is trained on / measured (not BOS)."""
    return tokens != bos_token_id(model)
