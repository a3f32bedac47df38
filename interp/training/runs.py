"""A run folder (cfg.json, sae.safetensors, metrics.json, density.html) and the train-then-save recipe."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from interp.config import write_atomic_text
from interp.dictionary import Dictionary
from interp.training.checkpoint import CHECKPOINT
from interp.training.run_folder import transaction
from interp.viz.density import write_density_page

METRICS_FILE = "metrics.json"
DENSITY_FILE = "density.html"


def write_metrics(folder: Path, metrics: dict, density: torch.Tensor) -> None:
    folder = Path(folder)
    write_atomic_text(folder / METRICS_FILE, json.dumps(metrics, indent=2, sort_keys=True))
    write_density_page(folder / DENSITY_FILE, density, title=folder.name)


def read_metrics(folder: Path) -> dict:
    return json.loads((Path(folder) / METRICS_FILE).read_text())


@transaction
def train_and_save(model, store, dictionaries: list[Dictionary], train_cfg, out_dir: Path, eval_tokens: torch.Tensor,
                   names: list[str] | None = None, resume: bool = False, input_key: str | list[str] = "x",
                   target_key: str | list[str] | None = None, log=None, overwrite: bool = False) -> list[Path]:
    """Train `dictionaries` on one stream, then write one run folder per dictionary with its metrics.

    A single dictionary's run folder is `out_dir`; a sweep's are `out_dir/<name>`. Under torchrun
    rank 0 writes every folder; module-parallel ranks first evaluate the dictionaries they trained.
    Once every folder is written the resumable checkpoint in `out_dir` is removed, unless
    `train_cfg.keep_checkpoint` (until then an interrupted run resumes from it). `out_dir` stays locked
    until every folder is written; `overwrite=True` replaces a run already there (interp.training.run_folder).
    """
    from interp.analysis.evals import evaluate_many
    from interp.training.loop import train

    from interp.distributed import gather_to_main, world

    out_dir = Path(out_dir)
    trained = train(dictionaries, store, train_cfg, out_dir, input_key=input_key, target_key=target_key, resume=resume, log=log)
    folders = [out_dir] if len(trained) == 1 else [out_dir / n for n in (names or [str(i) for i in range(len(trained))])]
    rank, world_size = world()
    owner = (lambda i: i % world_size) if train_cfg.parallel == "module" else (lambda i: 0)
    ids = [i for i in range(len(trained)) if owner(i) == rank]  # evaluated together: the model passes are shared
    mine = dict(zip(ids, evaluate_many(model, [trained[i] for i in ids], eval_tokens)))
    parts = gather_to_main({i: (metrics, density.cpu()) for i, (metrics, density) in mine.items()})
    if rank > 0:  # every rank holds the same weights; rank 0 writes them
        return folders
    results = {i: r for part in parts for i, r in part.items()}
    step_tokens = store.batch_size * world_size
    for i, (d, folder) in enumerate(zip(trained, folders)):
        d.save(folder)
        metrics, density = results[i]
        metrics["tokens_trained"] = train_cfg.steps(step_tokens) * step_tokens
        write_metrics(folder, metrics, density)
    if not train_cfg.keep_checkpoint:
        (out_dir / CHECKPOINT).unlink(missing_ok=True)
    return folders
