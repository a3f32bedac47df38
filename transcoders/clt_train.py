"""Training a cross-layer transcoder (`transcoders.clt`) from one model pass.

The shared loop (`interp.training.loop.train`) trains dictionaries whose losses
are independent; a CLT's is not (every layer's MLP output sums the decoders of
all earlier layers' features), so it has this short loop of its own, built
from the shared pieces: the same activation store (one pass harvests every
layer's MLP input and output), `TrainConfig` (Adam, warm-up and decay, clipping,
checkpoint interval, seed), activation-norm scaling folded into the weights on
export, atomic checkpoints with exact resume and SIGINT/SIGTERM handling
(`interp.training.checkpoint`), and data-parallel training under torchrun
(each rank reads its own shard, gradients are averaged before clipping, rank 0
checkpoints). Module-parallel training and stacking do not apply: a CLT is one module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from interp.config import to_dict
from interp.distributed import average_gradients, broadcast_module, broadcast_object, gather_to_main, world
from interp.training.checkpoint import check_step, load_checkpoint, save_checkpoint
from interp.training.loop import TrainConfig
from interp.training.losses import clip_grad_norm
from interp.training.run_folder import transaction
from interp.training.steps import check_resumable, run_steps
from transcoders.clt import CLTConfig, CrossLayerTranscoder
from transcoders.config import INPUT_KEY, TARGET_KEY, mlp_hooks, transcoder_config


def clt_hooks(n_layers: int) -> dict[str, str]:
    """Store keys x0, target0, x1, ... for every layer's MLP input and output."""
    return {f"{key}{l}": name for l in range(n_layers) for key, name in mlp_hooks(l).items()}


def stacked_batch(batch: dict[str, torch.Tensor], key: str, n_layers: int, scales: dict[str, float]) -> torch.Tensor:
    """{x0: [batch, d], ...} -> [batch, n_layers, d], each layer scaled by its norm factor."""
    return torch.stack([batch[f"{key}{l}"] * scales[f"{key}{l}"] for l in range(n_layers)], 1)


def clt_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed over layers of each layer's squared error (summed over d, averaged over tokens)."""
    return (recon - target).pow(2).sum(-1).mean(0).sum()


def init_from_data(clt: CrossLayerTranscoder, x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
    """Start as the per-layer transcoders the shared loop would initialise (same seed per layer), cross-layer
    decoders zero. x, y [batch, L, d_model] (scaled)."""
    from interp.dictionary import architecture

    cfg = clt.cfg
    fields = {"k": cfg.k} if cfg.arch == "topk" else {"l0_coeff": cfg.l0_coeff, "threshold_init": cfg.threshold_init}
    per_layer = {}
    for l in range(cfg.n_layers):
        tc = architecture(cfg.arch)(transcoder_config(cfg.d_model, l, cfg.arch, d_dict=cfg.d_dict, dtype=cfg.dtype, **fields))
        tc.init_from_data(x[:, l], y[:, l], torch.Generator().manual_seed(seed))
        per_layer[l] = tc
    clt.load_state_dict(CrossLayerTranscoder.from_transcoders(per_layer).state_dict())


@torch.no_grad()
def _project_decoder_grads(clt: CrossLayerTranscoder) -> None:
    """Remove each latent's gradient along its (unit, all-target-layers) decoder, so Adam moves on the sphere."""
    for W in clt.W_dec:
        if W.grad is not None:
            g, w = W.grad.flatten(1), W.flatten(1)
            g -= (g * w).sum(-1, keepdim=True) * w


@torch.no_grad()
def _normalise_decoders(clt: CrossLayerTranscoder) -> None:
    for W in clt.W_dec:
        W /= W.flatten(1).norm(dim=-1).clamp_min(1e-12)[:, None, None]


@transaction
def train_clt(clt: CrossLayerTranscoder, store, cfg: TrainConfig, out_dir: str | Path, resume: bool = False,
              log: Callable[[int, dict], None] | None = None, overwrite: bool = False) -> CrossLayerTranscoder:
    """Train `clt` on `store` (keys from `clt_hooks`); return a copy folded to act on raw activations.

    The checkpoint lives in `out_dir`; `resume=True` continues from it to the same weights as an
    uninterrupted run. `log(step, {"loss", "mse", "l0"})` is called every step. `out_dir` is locked
    while training, and a finished run in it is replaced only with `overwrite=True`, as `train` does."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    L, rank, world_size = clt.n_layers, *world()
    scales = broadcast_object(store.norm_scales())
    optimizer = torch.optim.Adam(clt.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    n_steps = cfg.steps(store.batch_size * world_size)
    if hasattr(store, "limit_rows"):  # the last block is harvested only as far as the run needs
        store.limit_rows(n_steps * store.batch_size)
    header = {"train": to_dict(cfg), "dictionaries": [to_dict(clt.cfg)], "batch_size": store.batch_size, "world_size": world_size}
    if resume:
        step = check_step(_restore(out_dir, header, clt, optimizer, store), n_steps, out_dir)
    else:
        step, sample = 0, store.block_rows(0)
        init_from_data(clt, stacked_batch(sample, INPUT_KEY, L, scales).cpu(), stacked_batch(sample, TARGET_KEY, L, scales).cpu(),
                       cfg.seed)
        broadcast_module(clt)

    def checkpoint(step: int):
        parts = gather_to_main((store.state_dict(), {k: v.cpu() for k, v in store.state_tensors().items()}))
        if rank == 0:
            tensors = {f"d0.{k}": v for k, v in clt.state_dict().items()}  # the shared checkpoint layout: dictionary 0
            tensors["d0.since_fired"] = torch.zeros(0)  # a CLT keeps no firing counts (no AuxK)
            for pid, slots in optimizer.state_dict()["state"].items():
                tensors.update({f"opt.{pid}.{k}": torch.as_tensor(v) for k, v in slots.items()})
            tensors.update({f"rank{r}.{k}": v for r, (_, ts) in enumerate(parts) for k, v in ts.items()})
            save_checkpoint(out_dir, {**header, "step": step, "store": [s for s, _ in parts]}, tensors)

    stream = iter(store)

    def take_step(step: int) -> dict[str, float]:
        stats = _step(clt, optimizer, next(stream), scales, cfg, cfg.lr_at(step, n_steps), world_size > 1)
        if log is not None:
            log(step + 1, stats)
        return stats

    run_steps(step, n_steps, take_step, checkpoint, cfg.checkpoint_every, out_dir, desc="train CLT")
    return exported(clt, scales)


def _step(clt, optimizer, batch, scales, cfg: TrainConfig, lr: float, data_parallel: bool) -> dict[str, float]:
    L = clt.n_layers
    x, y = stacked_batch(batch, INPUT_KEY, L, scales), stacked_batch(batch, TARGET_KEY, L, scales)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.autocast):
        recon, sparsity, l0 = clt.training_forward(x)
        mse = clt_loss(recon.float(), y)
        loss = mse + sparsity
    if not torch.isfinite(loss):
        raise FloatingPointError(f"The CLT loss is {loss.item()} (mse {mse.item()}); lower the lr or check the activations. "
                                 "The last checkpoint is kept.")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if data_parallel:
        average_gradients(clt.parameters())
    _project_decoder_grads(clt)
    clip_grad_norm([p.grad for p in clt.parameters()], cfg.grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    _normalise_decoders(clt)
    return {"loss": loss.item(), "mse": mse.item(), "l0": l0}


def exported(clt: CrossLayerTranscoder, scales: dict[str, float]) -> CrossLayerTranscoder:
    """A copy acting on raw activations."""
    out = CrossLayerTranscoder(clt.cfg).to(clt.b_dec.device)
    out.load_state_dict(clt.state_dict())
    L = clt.n_layers
    out.fold_scales([scales[f"{INPUT_KEY}{l}"] for l in range(L)], [scales[f"{TARGET_KEY}{l}"] for l in range(L)])
    return out


def _restore(out_dir, header, clt, optimizer, store) -> int:
    state, tensors = load_checkpoint(out_dir)
    check_resumable(state, header, out_dir, to_dict(TrainConfig()))
    clt.load_state_dict({k[3:]: v for k, v in tensors.items() if k.startswith("d0.") and k != "d0.since_fired"})
    opt = optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, slot = key.split(".")
            opt["state"].setdefault(int(pid), {})[slot] = value
    optimizer.load_state_dict(opt)
    rank = world()[0]
    prefix = f"rank{rank}."
    store.load_state(state["store"][rank], {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    return int(state["step"])


@transaction
def train_clt_folder(model, out_dir: str | Path, train_cfg: TrainConfig, source: str = "shakespeare", batch_size: int = 4096,
                     block_contexts: int = 64, resume: bool = False, overwrite: bool = False, **fields) -> Path:
    """Harvest every layer's MLP input and output in one pass, train a CLT and save it to `out_dir`
    (circuit-tracer's layout + clt.json). `fields` go to CLTConfig (d_dict, k, arch, ...)."""
    from interp.data.activations import ActivationStore

    L = model.cfg.n_layers
    store = ActivationStore(model, clt_hooks(L), source=source, batch_size=batch_size, block_contexts=block_contexts,
                            seed=train_cfg.seed)
    fields.setdefault("d_dict", 8 * model.cfg.d_model)
    training = {"source": source, "split": "train", "tokens": train_cfg.tokens, "batch_size": batch_size,
                "lr": train_cfg.lr, "seed": train_cfg.seed}
    cfg = CLTConfig(n_layers=L, d_model=model.cfg.d_model, model=getattr(model, "spec", ""), training=training, **fields)
    trained = train_clt(CrossLayerTranscoder(cfg).to(store.device), store, train_cfg, out_dir, resume=resume, overwrite=overwrite)
    if world()[0] == 0:
        trained.save(out_dir)
    return Path(out_dir)
