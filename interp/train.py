"""One training loop for every dictionary, and for several at once: each batch
of activations is served to every dictionary, so a sweep costs one model pass.

Adam with linear warm-up and a linear decay over the last `decay_fraction` of
steps, gradient clipping, a unit-norm decoder (for architectures that want
it), AuxK on latents dead for `dead_tokens` tokens, bf16 autocast on CUDA, an
atomic checkpoint every `checkpoint_every` steps and on SIGINT/SIGTERM, exact
resume, and data parallelism under torchrun (`interp.distributed`: each rank's
store serves its own shard and gradients are averaged every step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from interp.activations import ActivationStore
from interp.checkpoint import TrainingInterrupted, load_checkpoint, save_checkpoint, stop_on_signals
from interp.config import to_dict
from interp.dictionary import Dictionary
from interp.distributed import (any_rank, average_buffers, average_gradients, broadcast_module, broadcast_object,
                                gather_objects, union, world)
from interp.losses import auxk_loss, normalize_rows, reconstruction_loss, remove_parallel_grad


@dataclass(frozen=True)
class TrainConfig:
    tokens: int = 500_000
    lr: float = 1e-3
    warmup_steps: int = 20  # capped at 5% of the run
    decay_fraction: float = 0.2
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    seed: int = 0
    autocast: bool = False  # bf16 autocast for the dictionary on CUDA
    tf32: bool = True  # TF32 matmuls on CUDA (no effect on CPU)

    def steps(self, batch_size: int) -> int:
        return max(1, self.tokens // batch_size)

    def lr_at(self, step: int, n_steps: int) -> float:
        warm = min(1.0, (step + 1) / max(1, min(self.warmup_steps, n_steps // 20)))
        decay_start = int(n_steps * (1 - self.decay_fraction))
        decay = 1.0 if step < decay_start else max(0.0, (n_steps - step) / max(1, n_steps - decay_start))
        return self.lr * warm * decay


class Trainee:
    """One dictionary with its optimizer and its count of tokens since each latent fired."""

    def __init__(self, dictionary: Dictionary, cfg: TrainConfig):
        self.dictionary = dictionary
        self.optimizer = torch.optim.Adam(dictionary.parameters(), lr=cfg.lr, betas=(0.9, 0.999), fused=True)
        self.since_fired = torch.zeros(dictionary.d_dict, dtype=torch.long)

    def step(self, x: torch.Tensor, target: torch.Tensor, extras: dict[str, torch.Tensor], lr: float,
             cfg: TrainConfig) -> dict[str, float]:
        d = self.dictionary
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.autocast and x.is_cuda):
            step = d.training_forward(x, **extras)
            mse = reconstruction_loss(step.recon.float(), target)
            sparsity = d.sparsity_loss(step)
            loss = mse + sparsity + d.cfg.aux_coeff * self._auxk(x, target - step.recon.float())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"The {d.arch} loss is {loss.item()} (mse {mse.item()}, sparsity {sparsity.item()}); "
                                     "lower --lr or check the activations. The last checkpoint is kept.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(d.parameters())
        average_buffers(d)
        if d.unit_norm_decoder:
            remove_parallel_grad(d.W_dec)
        torch.nn.utils.clip_grad_norm_(d.parameters(), cfg.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        if d.unit_norm_decoder:
            normalize_rows(d.W_dec)
        fired = union(step.fired(d.d_dict)).cpu()
        self.since_fired = torch.where(fired, 0, self.since_fired + len(x) * world()[1])
        return {"loss": loss.item(), "mse": mse.item(), "l0": step.l0()}

    def _auxk(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """AuxK on the latents silent for `dead_tokens` tokens (0 when none are, or AuxK is off)."""
        d = self.dictionary
        dead = (self.since_fired >= d.cfg.dead_tokens).nonzero().squeeze(-1).to(x.device)
        if not d.cfg.aux_k or len(dead) == 0:
            return x.new_zeros(())
        return auxk_loss(d.pre_acts(x, dead), d.W_dec[dead], residual, d.cfg.aux_k)

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


def train(dictionaries: list[Dictionary], store: ActivationStore, cfg: TrainConfig, out_dir: str | Path,
          input_key: str = "x", target_key: str | None = None, resume: bool = False,
          log: Callable[[int, list[dict[str, float]]], None] | None = None) -> list[Dictionary]:
    """Train every dictionary on the same stream; return them folded to act on raw activations.

    `log(step, per_dictionary_losses)` is called every step (e.g. to send them to wandb).

    The checkpoint lives in `out_dir`; pass `resume=True` to continue from it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target_key = target_key or input_key
    if cfg.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    _check_widths(dictionaries, store, input_key, target_key)
    scales = broadcast_object(store.norm_scales())  # rank 0's shard starts the whole stream: one scale for all
    scale_in, scale_out = scales[input_key], scales[target_key]
    trainees = [Trainee(d, cfg) for d in dictionaries]
    rank, world_size = world()
    n_steps = cfg.steps(store.batch_size * world_size)
    header = {"train": to_dict(cfg), "dictionaries": [to_dict(d.cfg) for d in dictionaries],
              "batch_size": store.batch_size, "world_size": world_size}
    if resume:
        step = _restore(out_dir, header, trainees, store)
    else:
        step = 0
        sample = store.block_rows(0)  # the stream's first block (rank 0's); initialisation consumes no batch
        for d in dictionaries:  # the same seed for each, so a sweep's members match their solo runs
            g = torch.Generator().manual_seed(cfg.seed)
            d.init_from_data(sample[input_key].cpu() * scale_in, sample[target_key].cpu() * scale_out, g)
            broadcast_module(d)

    def checkpoint():
        stores = gather_objects((store.state_dict(), store.state_tensors()))
        if rank == 0:
            state = {**header, "step": step, "store": [s for s, _ in stores]}
            tensors = {k: v for i, t in enumerate(trainees) for k, v in t.tensors(i).items()}
            tensors.update({f"rank{r}.{k}": v for r, (_, ts) in enumerate(stores) for k, v in ts.items()})
            save_checkpoint(out_dir, state, tensors)

    bar = tqdm(total=n_steps, initial=step, desc="train", unit="step", dynamic_ncols=True, disable=rank > 0)
    stream = iter(store)
    with stop_on_signals() as stop:
        while step < n_steps:
            batch = next(stream)
            x, target = batch[input_key] * scale_in, batch[target_key] * scale_out
            lr = cfg.lr_at(step, n_steps)
            logs = [t.step(x, target, {k: batch[k] for k in t.dictionary.needs}, lr, cfg) for t in trainees]
            step += 1
            bar.update(1)
            bar.set_postfix(mse=f"{logs[0]['mse']:.3g}", l0=f"{logs[0]['l0']:.1f}")
            if log is not None:
                log(step, logs)
            if any_rank(stop.requested):
                checkpoint()
                bar.close()
                raise TrainingInterrupted(f"Stopped at step {step}/{n_steps}; checkpoint in {out_dir}. Resume with --resume.")
            if step % cfg.checkpoint_every == 0 and step < n_steps:
                checkpoint()
    bar.close()
    checkpoint()
    return [d.exported(scale_in, scale_out) for d in dictionaries]


def _check_widths(dictionaries, store, input_key, target_key):
    sample = store.block_rows(0)
    for d in dictionaries:
        for key, width, role in ((input_key, d.d_in, "d_in"), (target_key, d.d_out, "d_out")):
            if sample[key].shape[1] != width:
                raise ValueError(f"{role}={width} does not match {store.hooks[key]}, whose activations have width "
                                 f"{sample[key].shape[1]}; set {role} to {sample[key].shape[1]}.")


def _restore(out_dir, header, trainees, store) -> int:
    state, tensors = load_checkpoint(out_dir)
    for key in ("train", "dictionaries", "batch_size", "world_size"):
        if state[key] != header[key]:
            raise ValueError(f"The checkpoint in {out_dir} was written with a different {key}:\n  saved {state[key]}\n"
                             f"  now   {header[key]}\nResume with the same settings, or use a new output folder.")
    for i, t in enumerate(trainees):
        t.load(i, tensors)
    rank = world()[0]
    prefix = f"rank{rank}."
    store.load_state(state["store"][rank], {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    return int(state["step"])

