"""The part every training loop shares after its set-up: take steps until the run is done, with a progress
bar, a checkpoint every `checkpoint_every` steps and at the end, and on SIGINT/SIGTERM (on any rank) a
checkpoint and `TrainingInterrupted`; and the check that a checkpoint may be resumed with today's settings.

`interp.training.loop.train` (dictionaries with independent losses) and `transcoders.clt_train.train_clt`
(one cross-layer transcoder) differ only in their set-up and in what one step does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from interp.distributed import any_rank, world
from interp.training.checkpoint import TrainingInterrupted, stop_on_signals

RESUMABLE_KEYS = ("train", "dictionaries", "batch_size", "world_size")
FREE_TRAIN_FIELDS = ("checkpoint_every", "keep_checkpoint")  # TrainConfig fields that leave the weights alone


def run_steps(step: int, n_steps: int, take_step: Callable[[int], dict[str, float]], checkpoint: Callable[[int], None],
              checkpoint_every: int, out_dir: str | Path, desc: str = "train") -> None:
    """Take steps `step`, ..., n_steps - 1: `take_step(s)` does step s and returns what the bar shows ("mse",
    "l0"); `checkpoint(s)` saves the state after s steps (every `checkpoint_every`, at the end, and when a
    rank is asked to stop, after which TrainingInterrupted is raised on every rank)."""
    bar = tqdm(total=n_steps, initial=step, desc=desc, unit="step", dynamic_ncols=True, disable=world()[0] > 0)
    with stop_on_signals() as stop:
        while step < n_steps:
            shown = take_step(step)
            step += 1
            bar.update(1)
            bar.set_postfix(mse=f"{shown['mse']:.3g}", l0=f"{shown['l0']:.1f}")
            if any_rank(stop.requested):
                checkpoint(step)
                bar.close()
                raise TrainingInterrupted(f"Stopped at step {step}/{n_steps}; checkpoint in {out_dir}. "
                                          "Resume with --resume (resume=True).")
            if step % checkpoint_every == 0 and step < n_steps:
                checkpoint(step)
    bar.close()
    checkpoint(step)


def resumable(train: dict) -> dict:
    """The TrainConfig fields (as a dict) a resumed run must share with its checkpoint."""
    return {k: v for k, v in train.items() if k not in FREE_TRAIN_FIELDS}


def check_resumable(state: dict, header: dict, out_dir: str | Path, train_defaults: dict) -> None:
    """Fail unless the checkpoint's `state` was written with the settings in `header` (the keys in
    RESUMABLE_KEYS; TrainConfig fields added since the checkpoint take `train_defaults`)."""
    state["train"] = resumable({**train_defaults, **state["train"]})
    header = {**header, "train": resumable(header["train"])}
    for key in RESUMABLE_KEYS:
        if state[key] != header[key]:
            raise ValueError(f"The checkpoint in {out_dir} was written with a different {key}:\n  saved {state[key]}\n"
                             f"  now   {header[key]}\nResume with the same settings, or use a new output folder.")
