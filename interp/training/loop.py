"""One training loop for every dictionary, and for several at once: each batch
of activations is served to every dictionary, so a sweep costs one model pass.

Adam with linear warm-up and a linear decay over the last `decay_fraction` of
steps, gradient clipping, a unit-norm decoder (for architectures that want
it), AuxK on latents dead for `dead_tokens` tokens, optional bf16 autocast, an
atomic checkpoint every `checkpoint_every` steps and on SIGINT/SIGTERM, exact
resume, and two kinds of parallelism under torchrun (`interp.distributed`):
data-parallel (each rank's store serves its own shard of every batch and
gradients are averaged) and module-parallel (the ranks' shards are gathered
into one batch that every rank sees, and rank r trains dictionaries r,
r + world, ...: N ranks train N dictionaries from one shared model pass).
Dictionaries of the same class and shapes that read and reconstruct the same
keys can train as one stack (`interp.training.stacked`): one batched step for the sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.data.activations import BlockStream
from interp.training.checkpoint import check_step, load_checkpoint, save_checkpoint
from interp.config import to_dict
from interp.dictionary import Dictionary
from interp.errors import UserError
from interp.distributed import (average_buffers, average_gradients, broadcast_module, broadcast_object,
                                gather_batches, gather_objects, gather_to_main, union, world)
from interp.training.losses import (
    clip_grad_norm,
    dead_latent_auxk,
    normalize_rows,
    reconstruction_loss,
    remove_parallel_grad,
)
from interp.training.run_folder import transaction
from interp.training.stacked import StackedTrainee, stack_trainees
from interp.training.steps import check_resumable, resumable, run_steps


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the `interp train` flags are derived from these fields (interp.cli.flags), comments included."""

    tokens: int = 400_000  # training tokens
    lr: float = 1e-3  # Adam learning rate (1e-3 suits the short CPU runs; large runs use less)
    warmup_steps: int = 20  # linear learning-rate warm-up steps, capped at 5% of the run
    decay_fraction: float = 0.2  # fraction of the run at the end over which the learning rate decays linearly to 0
    grad_clip: float = 1.0  # gradient-norm clipping, per dictionary
    checkpoint_every: int = 50  # steps between checkpoints
    seed: int = 0  # initialisation and data-order seed
    autocast: bool = False  # bf16 autocast for the dictionary (meant for CUDA; runs on CPU too)
    tf32: bool = True  # TF32 matmuls on CUDA (no effect on CPU)
    stack: str = "auto"  # same-shaped dictionaries as one stack (interp.training.stacked): on, off, auto (on CUDA)
    parallel: str = "data"  # under torchrun: data (ranks split each batch) or module (ranks split the dictionaries)
    keep_checkpoint: bool = False  # keep the resumable checkpoint after the run folders are written

    def __post_init__(self):
        for name, low in (("tokens", 1), ("checkpoint_every", 1), ("warmup_steps", 0)):
            if not getattr(self, name) >= low:
                raise UserError(f"{name}={getattr(self, name)!r} (--{name.replace('_', '-')}): expected at least {low}.")
        for name, ok, expected in (("lr", self.lr > 0, "> 0"), ("grad_clip", self.grad_clip > 0, "> 0"),
                                   ("decay_fraction", 0 <= self.decay_fraction <= 1, "between 0 and 1")):
            if not ok:
                raise UserError(f"{name}={getattr(self, name)!r} (--{name.replace('_', '-')}): expected {expected}.")
        if self.stack not in ("auto", "on", "off"):
            raise ValueError(f"stack={self.stack!r}: expected 'auto' (stack sweeps on CUDA), 'on' or 'off'.")
        if self.parallel not in ("data", "module"):
            raise ValueError(f"parallel={self.parallel!r}: expected 'data' (split each batch among ranks) or 'module' "
                             "(every rank sees the whole batch and trains its own dictionaries).")

    def steps(self, batch_size: int) -> int:
        return max(1, self.tokens // batch_size)

    def lr_at(self, step: int, n_steps: int) -> float:
        warm = min(1.0, (step + 1) / max(1, min(self.warmup_steps, n_steps // 20)))
        decay_start = int(n_steps * (1 - self.decay_fraction))
        decay = 1.0 if step < decay_start else max(0.0, (n_steps - step) / max(1, n_steps - decay_start))
        return self.lr * warm * decay


class Trainee:
    """One dictionary with its optimizer and its count of tokens since each latent fired.

    `data_parallel`: every rank holds a copy and sees its own part of the batch, so gradients,
    buffers and firing statistics are averaged across ranks (a no-op outside torchrun).
    """

    def __init__(self, dictionary: Dictionary, cfg: TrainConfig, data_parallel: bool = True):
        self.dictionary, self.data_parallel = dictionary, data_parallel
        self.optimizer = torch.optim.Adam(dictionary.parameters(), lr=cfg.lr, betas=(0.9, 0.999), fused=True)
        self.since_fired = torch.zeros(dictionary.d_dict, dtype=torch.long)

    def step(self, x: torch.Tensor, target: torch.Tensor, extras: dict[str, torch.Tensor], lr: float,
             cfg: TrainConfig) -> dict[str, float]:
        d = self.dictionary
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.autocast):
            step = d.training_forward(x, **extras)
            mse = reconstruction_loss(step.recon.float(), target)
            sparsity = d.sparsity_loss(step)
            loss = mse + sparsity + d.cfg.aux_coeff * dead_latent_auxk(d, self.since_fired, x, target, step.recon)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"The {d.arch} loss is {loss.item()} (mse {mse.item()}, sparsity {sparsity.item()}); "
                                     "lower --lr or check the activations. The last checkpoint is kept.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.data_parallel:
            average_gradients(d.parameters())
            average_buffers(d)
        if d.unit_norm_decoder:
            remove_parallel_grad(d.W_dec)
        clip_grad_norm([p.grad for p in d.parameters()], cfg.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        if d.unit_norm_decoder:
            normalize_rows(d.W_dec)
        fired, ranks = step.fired(d.d_dict), 1
        if self.data_parallel:
            fired, ranks = union(fired), world()[1]
        self.since_fired = torch.where(fired.cpu(), 0, self.since_fired + len(x) * ranks)
        return {"loss": loss.item(), "mse": mse.item(), "l0": step.l0()}

    def tensors(self, i: int) -> dict[str, torch.Tensor]:
        out = {f"d{i}.{k}": v for k, v in self.dictionary.state_dict().items()}
        out[f"d{i}.since_fired"] = self.since_fired
        for pid, slots in self.optimizer.state_dict()["state"].items():
            out.update({f"opt{i}.{pid}.{k}": torch.as_tensor(v) for k, v in slots.items()})
        return out

    def load(self, i: int, tensors: dict[str, torch.Tensor]) -> None:
        prefix = f"d{i}."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.since_fired = own.pop("since_fired")
        self.dictionary.load_state_dict(own)
        state = self.optimizer.state_dict()
        for key, value in tensors.items():
            if key.startswith(f"opt{i}."):
                _, pid, slot = key.split(".")
                state["state"].setdefault(int(pid), {})[slot] = value
        self.optimizer.load_state_dict(state)


@transaction
def train(dictionaries: list[Dictionary], store: BlockStream, cfg: TrainConfig, out_dir: str | Path,
          input_key: str | list[str] = "x", target_key: str | list[str] | None = None, resume: bool = False,
          log: Callable[[int, list[dict[str, float]]], None] | None = None, overwrite: bool = False) -> list[Dictionary]:
    """Train every dictionary on the same stream; return them folded to act on raw activations.

    `input_key`/`target_key` name the store keys each dictionary reads and reconstructs: one
    key for all, or a list with one per dictionary (e.g. one dictionary per hook).
    `log(step, per_dictionary_losses)` is called every step (e.g. to send them to wandb).
    Under torchrun `cfg.parallel` chooses data- or module-parallel training; either way every
    rank returns every trained dictionary.

    The checkpoint lives in `out_dir`; pass `resume=True` to continue from it. `out_dir` is locked
    while training, and an interrupted or finished run in it is replaced only with `overwrite=True`
    (interp.training.run_folder).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(dictionaries)
    inputs = _per_dictionary(input_key, n, "input_key")
    targets = inputs if target_key is None else _per_dictionary(target_key, n, "target_key")
    if cfg.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    _check_widths(dictionaries, store, inputs, targets)
    scales = broadcast_object(store.norm_scales())  # rank 0's shard starts the whole stream: one scale for all
    rank, world_size = world()
    module = cfg.parallel == "module" and world_size > 1
    if module and n < world_size:
        raise ValueError(f"Module-parallel training gives each rank its own dictionaries, but there are {n} for "
                         f"{world_size} ranks; train at least {world_size} dictionaries, use fewer ranks, or parallel='data'.")
    n_steps, step_tokens = cfg.steps(store.batch_size * world_size), store.batch_size * world_size
    if hasattr(store, "limit_rows"):  # this rank's rows: the last block is harvested only as far as needed
        store.limit_rows(n_steps * store.batch_size)
    _complete(dictionaries, store, n_steps * step_tokens, step_tokens, cfg)
    mine = {i: dictionaries[i] for i in (range(rank, n, world_size) if module else range(n))}
    stacks = stack_trainees(mine, inputs, targets, cfg, data_parallel=not module)
    trainees = {i: stacks.get(i) or Trainee(d, cfg, data_parallel=not module) for i, d in mine.items()}
    header = {"train": resumable(to_dict(cfg)), "dictionaries": [to_dict(d.cfg) for d in dictionaries],
              "batch_size": store.batch_size, "world_size": world_size}
    if resume:
        step = check_step(_restore(out_dir, header, trainees, store), n_steps, out_dir)
    else:
        step = 0
        sample = store.block_rows(0)  # the stream's first block (rank 0's); initialisation consumes no batch
        for d, kin, kout in zip(dictionaries, inputs, targets):  # one seed for all, so a sweep's members match solo runs
            g = torch.Generator().manual_seed(cfg.seed)
            d.init_from_data(sample[kin].cpu() * scales[kin], sample[kout].cpu() * scales[kout], g)
            broadcast_module(d)

    def checkpoint(step: int):
        mine = {k: v.cpu() for i, t in trainees.items() for k, v in t.tensors(i).items()} if module or rank == 0 else {}
        parts = gather_to_main((store.state_dict(), {k: v.cpu() for k, v in store.state_tensors().items()}, mine))
        if rank == 0:
            state = {**header, "step": step, "store": [s for s, _, _ in parts]}
            tensors = {k: v for _, _, ts in parts for k, v in ts.items()}
            tensors.update({f"rank{r}.{k}": v for r, (_, ts, _) in enumerate(parts) for k, v in ts.items()})
            save_checkpoint(out_dir, state, tensors)

    stream = gather_batches(iter(store)) if module else iter(store)

    def take_step(step: int) -> dict[str, float]:
        batch = next(stream)
        lr = cfg.lr_at(step, n_steps)
        scaled = {k: batch[k] * scales[k] for k in set(inputs) | set(targets)}  # once per key, not per dictionary
        logs = {}
        for i, t in trainees.items():
            if i in logs:
                continue  # stepped with the rest of its stack
            x, y = scaled[inputs[i]], scaled[targets[i]]
            if isinstance(t, StackedTrainee):
                logs.update(t.step(x, y, lr, cfg))
            else:
                logs[i] = t.step(x, y, {k: batch[k] for k in t.dictionary.needs}, lr, cfg)
        first = next(iter(logs.values()))
        if log is not None:
            if module:
                logs = {i: v for part in gather_objects(logs) for i, v in part.items()}
            log(step + 1, [logs[i] for i in range(n)])
        return first

    run_steps(step, n_steps, take_step, checkpoint, cfg.checkpoint_every, out_dir)
    if module:  # every rank returns every dictionary, as in data-parallel training
        for i, d in enumerate(dictionaries):
            broadcast_module(d, src=i % world_size)
    return [d.exported(scales[kin], scales[kout]) for d, kin, kout in zip(dictionaries, inputs, targets)]


def _complete(dictionaries: list[Dictionary], store: BlockStream, tokens: int, batch_size: int, cfg: TrainConfig) -> None:
    """Fill in what a config leaves to the run: the dead-latent window (the architecture's `dead_window`),
    the model, and the `training` record (source, tokens, ...), so cfg.json says how it was made."""
    cache = getattr(store, "cache", None)
    described = cache.description if cache is not None else {
        "model": getattr(getattr(store, "model", None), "spec", ""), "source": getattr(store, "source", ""),
        "split": getattr(store, "split", "train"), "n_ctx": getattr(store, "n_ctx", 0)}
    record = {"source": described["source"], "split": described.get("split", "train"), "n_ctx": described["n_ctx"],
              "tokens": tokens, "batch_size": batch_size, "lr": cfg.lr, "seed": cfg.seed}
    for d in dictionaries:
        dead = d.cfg.dead_tokens if d.cfg.dead_tokens is not None else d.dead_window(cfg.tokens, batch_size)
        d.cfg = d.cfg.replace(dead_tokens=dead, model=d.cfg.model or described.get("model", ""),
                              training={**d.cfg.training, **record})


def _per_dictionary(keys: str | list[str], n: int, name: str) -> list[str]:
    if isinstance(keys, str):
        return [keys] * n
    if len(keys) != n:
        raise ValueError(f"{name} lists {len(keys)} store keys for {n} dictionaries; give one key, or one per dictionary.")
    return list(keys)


def _check_widths(dictionaries, store, inputs, targets):
    sample = store.block_rows(0)
    for d, input_key, target_key in zip(dictionaries, inputs, targets):
        for key, width, role in ((input_key, d.d_in, "d_in"), (target_key, d.d_out, "d_out")):
            if key not in sample:
                raise ValueError(f"The store has no key {key!r} (it serves {sorted(sample)}); pass one of those.")
            if sample[key].shape[1] != width:
                raise ValueError(f"{role}={width} does not match {store.hooks[key]}, whose activations have width "
                                 f"{sample[key].shape[1]}; set {role} to {sample[key].shape[1]}.")


def _restore(out_dir, header, trainees, store) -> int:
    state, tensors = load_checkpoint(out_dir)
    check_resumable(state, header, out_dir, to_dict(TrainConfig()))
    for i, t in trainees.items():
        t.load(i, tensors)
    rank = world()[0]
    prefix = f"rank{rank}."
    store.load_state(state["store"][rank], {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    return int(state["step"])

