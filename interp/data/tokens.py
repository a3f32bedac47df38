"""Token streams: text from the embedded corpus, local files or the hub, packed
into fixed-length contexts that each start with BOS.

Documents are joined with BOS between them; every BOS position is masked out
of training and metrics (its activations are outliers the model uses as an
attention sink).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

import torch

from interp.data.corpus import SHAKESPEARE, shakespeare_texts
from interp.errors import UserError
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
        check_text_files(files)
        try:
            rows = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
        except datasets.exceptions.DatasetGenerationError as err:
            raise UserError(f"Cannot read {source} as {builder} ({err.__cause__ or err}); check the files' format.") from None
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


def check_text_files(files: list[Path]) -> None:
    """Fail, naming the file, on an empty file or a text file that is not UTF-8 text (binary data)."""
    for f in files:
        if f.stat().st_size == 0:
            raise UserError(f"Text source {f} is empty; give a file with text in it.")
        if f.suffix == ".txt":
            with open(f, "rb") as handle:
                head = handle.read(1 << 16)
            try:
                text = codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < 1 << 16)
            except UnicodeDecodeError as err:
                raise UserError(f"Text source {f} is not UTF-8 text (byte {err.start}); is it a binary file?") from None
            if "\x00" in text:
                raise UserError(f"Text source {f} holds NUL bytes: it is a binary file, not text.")


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
    longest = getattr(getattr(model, "cfg", None), "n_ctx", n_ctx)
    if n_ctx > longest:
        raise UserError(f"n_ctx={n_ctx} (--n-ctx) is longer than the model's context of {longest} tokens; use at most {longest}.")
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
    if not (isinstance(n, int) and n >= 1 and skip >= 0):
        raise UserError(f"take_contexts: n={n!r} contexts (--eval-contexts), skip={skip!r}; expected n >= 1 and skip >= 0.")
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
