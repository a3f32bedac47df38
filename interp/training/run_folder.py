"""A run folder is a transaction: a finished run is never replaced without `overwrite`, a training
checkpoint only continues with `resume` (or is replaced with `overwrite`), and one process at a time
trains into it.

The lock is an fcntl lock on `<folder>/.lock`, a file holding the holder's pid, host and start
time (so a second process can say who holds it); the kernel drops the lock when the holder
dies, even by kill -9, so a stale file never blocks anyone. Within one process claims nest
(`train_and_save` claims the folder and calls `train`, which claims it again): only the
outermost one checks the folder and takes the lock. Under torchrun rank 0, the rank that
writes, claims for all. Files inside are written atomically (temporary file, then rename)
by their writers.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import socket
import time
from pathlib import Path

from interp.errors import UserError
from interp.training.checkpoint import CHECKPOINT

try:
    import fcntl
except ImportError:  # Windows: no lock, the checks still apply
    fcntl = None

LOCK_FILE = ".lock"
CONFIG_FILES = ("cfg.json", "config.json", "clt.json")  # ours, SAELens and sparsify; dictionary_learning; our CLTs
WEIGHT_PATTERNS = ("*.safetensors", "ae.pt", "params.npz")  # ours, SAELens, sparsify; dictionary_learning; Gemma Scope

_held: dict[Path, list] = {}  # folder -> [open lock file, nesting depth], this process's claims


def finished_runs(folder: Path) -> list[Path]:
    """`folder` and its direct subfolders (a sweep's members) that hold a config and weights in a format we read."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [f for f in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())) if _holds_run(f)]


def _holds_run(folder: Path) -> bool:
    weights = [w for pattern in WEIGHT_PATTERNS for w in folder.glob(pattern) if w.name != CHECKPOINT]
    return bool(weights) and any((folder / name).is_file() for name in CONFIG_FILES)


def check(folder: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Fail unless training into `folder` loses nothing: a training checkpoint needs `resume` (or `overwrite`),
    a finished run `overwrite`."""
    folder = Path(folder)
    checkpoint = (folder / CHECKPOINT).exists()
    finished = finished_runs(folder)
    if overwrite or (resume and checkpoint):
        return
    names = ", ".join(str(f) for f in finished[:3]) + (" ..." if len(finished) > 3 else "")
    if resume and finished:
        raise UserError(f"{folder} holds a finished run ({names}) and no {CHECKPOINT}: nothing to resume. "
                        "Use --overwrite (overwrite=True) to train it again, or another --out.")
    if resume:
        raise UserError(f"No {CHECKPOINT} in {folder}: nothing to resume (drop --resume to start fresh).")
    if checkpoint and not resume:
        raise UserError(f"{folder} holds the training checkpoint of an earlier run ({CHECKPOINT}). Use --resume "
                        "(resume=True) to continue it, --overwrite (overwrite=True) to start over, or another --out.")
    if finished:
        raise UserError(f"{folder} already holds a finished run ({names}). Use --overwrite (overwrite=True) to replace "
                        "it, or another --out (--resume continues only an interrupted run).")


def acquire(folder: Path) -> None:
    """Lock `folder` for this process (creating it), or fail naming the process that holds it."""
    folder = Path(folder).absolute()
    if folder in _held:
        _held[folder][1] += 1
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_FILE, "a+")
    except OSError as err:
        raise UserError(f"Cannot write to the run folder {folder} ({err.strerror or err}); choose a writable --out.") from None
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserError(f"{folder} is locked: {holder} is training into it. Wait for it to finish (or stop it), "
                            "or use another --out.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    handle.flush()
    _held[folder] = [handle, 1]


def release(folder: Path) -> None:
    """Undo one `acquire`; the lock goes when the outermost claim ends (or the process does)."""
    folder = Path(folder).absolute()
    entry = _held.get(folder)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[folder]
        entry[0].close()  # closing the file drops the fcntl lock; the file stays (unlinking it would race)


def enter(folder: Path, resume: bool = False, overwrite: bool = False) -> bool:
    """Check `folder` (see `check`) and lock it, unless this process holds it already (then only count
    the claim). Under torchrun only rank 0, the rank that writes, does this; returns whether it did."""
    from interp.distributed import world

    if world()[0] != 0:
        return False
    if Path(folder).absolute() not in _held:
        check(folder, resume, overwrite)
    acquire(folder)
    return True


@contextlib.contextmanager
def claim(folder: Path, resume: bool = False, overwrite: bool = False):
    """`enter` for the block, then `release`."""
    entered = enter(folder, resume, overwrite)
    try:
        yield Path(folder)
    finally:
        if entered:
            release(folder)


def transaction(fn):
    """Run `fn(..., out_dir, resume=..., overwrite=...)` inside `claim(out_dir, resume, overwrite)`."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        with claim(a["out_dir"], resume=a.get("resume", False), overwrite=a.get("overwrite", False)):
            return fn(*args, **kwargs)

    return wrapper
