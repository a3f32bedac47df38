"""Atomic training checkpoints (one safetensors file, JSON state in its header)
and the SIGINT/SIGTERM handling that writes one before stopping."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

CHECKPOINT = "checkpoint.safetensors"


class TrainingInterrupted(Exception):
    """Raised after a checkpoint was written because the process was asked to stop."""


def save_checkpoint(folder: Path, state: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write to a temporary file then rename, so an earlier checkpoint survives any crash."""
    path = Path(folder) / CHECKPOINT
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata={"state": json.dumps(state)})
    tmp.replace(path)
    return path


def load_checkpoint(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}: nothing to resume (drop --resume to start fresh).")
    try:
        with safe_open(path, framework="pt") as f:
            state = json.loads(f.metadata()["state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise ValueError(f"Checkpoint {path} is unreadable ({err}); it was not written by interp or is truncated.") from None
    return state, tensors


class StopFlag:
    """Set by SIGINT/SIGTERM while training; the loop checkpoints and stops at the next step."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        self.requested = True


@contextlib.contextmanager
def stop_on_signals():
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.signal(s, flag) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
