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

from interp.errors import UserError

CHECKPOINT = "checkpoint.safetensors"
STATE_FIELDS = ("step", "train", "dictionaries", "batch_size", "world_size", "store")  # what a resume reads


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
    """(state, tensors) of the checkpoint in `folder`, checked to hold every field a resume reads."""
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}: nothing to resume (drop --resume to start fresh).")
    try:
        with safe_open(path, framework="pt") as f:
            state = json.loads((f.metadata() or {})["state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as err:
        raise UserError(f"Checkpoint {path} is unreadable ({type(err).__name__}: {err}); it was not written by interp or "
                        "is truncated. Delete it (or use --overwrite) to start over.") from None
    _check_state(path, state, tensors)
    return state, tensors


def _check_state(path: Path, state, tensors: dict[str, torch.Tensor]) -> None:
    def bad(what: str) -> UserError:
        return UserError(f"Checkpoint {path} is invalid: {what}. It was not written by this version of interp or was "
                         "edited; delete it (or use --overwrite) to start over.")

    if not isinstance(state, dict):
        raise bad("its state is not a JSON object")
    missing = [k for k in STATE_FIELDS if k not in state]
    if missing:
        raise bad(f"missing field(s) {missing}")
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise bad(f"step {step!r} is not a step count")
    if not isinstance(state["dictionaries"], list) or not isinstance(state["store"], list):
        raise bad("'dictionaries' and 'store' should be lists")
    lacking = [i for i in range(len(state["dictionaries"])) if f"d{i}.since_fired" not in tensors]
    if lacking:
        raise bad(f"no tensors for dictionary {lacking[0]} of {len(state['dictionaries'])}")


def check_step(step: int, n_steps: int, folder: Path) -> int:
    """`step` if a run of `n_steps` steps can resume from it (it equals `n_steps` when training finished)."""
    if step > n_steps:
        raise UserError(f"The checkpoint in {folder} is at step {step}, beyond this run's {n_steps} steps: it belongs to a "
                        "longer run. Resume with the settings it was written with, or use --overwrite to start over.")
    return step


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
