"""A run folder (cfg.json, sae.safetensors, metrics.json, density.html) and the train-then-save recipe."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from interp.config import write_atomic_text
from interp.dictionary import Dictionary
from interp.viz.density import density_histogram

METRICS_FILE = "metrics.json"
DENSITY_FILE = "density.html"


def write_metrics(folder: Path, metrics: dict, density: torch.Tensor) -> None:
    folder = Path(folder)
    write_atomic_text(folder / METRICS_FILE, json.dumps(metrics, indent=2, sort_keys=True))
    density_histogram(density, title=folder.name).write_html(folder / DENSITY_FILE, include_plotlyjs=True)


def read_metrics(folder: Path) -> dict:
    return json.loads((Path(folder) / METRICS_FILE).read_text())


def train_and_save(model, store, dictionaries: list[Dictionary], train_cfg, out_dir: Path, eval_tokens: torch.Tensor,
                   names: list[str] | None = None, resume: bool = False, input_key: str = "x",
                   target_key: str | None = None, log=None) -> list[Path]:
    """Train `dictionaries` on one stream, then write one run folder per dictionary with its metrics.

    A single dictionary's run folder is `out_dir`; a sweep's are `out_dir/<name>`.
    """
    from interp.evals import evaluate
    from interp.train import train

    from interp.distributed import is_main, world

    out_dir = Path(out_dir)
    trained = train(dictionaries, store, train_cfg, out_dir, input_key=input_key, target_key=target_key, resume=resume, log=log)
    folders = [out_dir] if len(trained) == 1 else [out_dir / n for n in (names or [str(i) for i in range(len(trained))])]
    if not is_main():  # every rank holds the same weights; rank 0 writes them
        return folders
    for d, folder in zip(trained, folders):
        d.save(folder)
        metrics, density = evaluate(model, d, eval_tokens)
        step_tokens = store.batch_size * world()[1]
        metrics["tokens_trained"] = train_cfg.steps(step_tokens) * step_tokens
        write_metrics(folder, metrics, density)
    return folders
