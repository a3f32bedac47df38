"""Several same-shaped dictionaries trained as one stack: a sweep (of k, of the L1
coefficient, ...) whose members share their shapes, input and target takes one
optimizer step over parameters stacked [E, ...].

How the forward runs is the architecture's (`Dictionary.stacked_forward`): TopK
members share it (one stacked TopK encode and one sparse decode over E * d_dict
latents, one k per member); the others run each member's own
`training_forward`, as batching their dense matmuls would need the E members'
[batch, d_dict] pre-activations and codes stacked and unstacked, which costs
more than it saves (benchmarks/bench_stacked.py). What makes members differ
(k, sparsity loss, AuxK, thresholds) always runs through the member's own
methods and config.

Each member's parameters and buffers become views of its slice of the stack,
and its .grad a view of the stack's gradient, so the Dictionary objects always
hold the current weights: checkpoints (the same per-dictionary keys as
`Trainee`), resume and export are unchanged. Results equal one-by-one training
(tests/test_stacked.py: bit for bit for a float32 TopK sweep, else to the last
bit or two, as AuxK's gradient may be summed in another order); gradient
clipping stays per member.
"""

from __future__ import annotations

import torch
from torch import nn

from interp.dictionary import Dictionary, TrainingStep
from interp.distributed import average_buffers, average_gradients, union, world
from interp.training.losses import (
    clip_grad_norm,
    dead_latent_auxk,
    normalize_rows,
    reconstruction_loss,
    remove_parallel_grad,
)


def stack_key(d: Dictionary, input_key: str, target_key: str) -> tuple | None:
    """Dictionaries with equal keys can train as one stack; None for one that trains alone."""
    cls = type(d)
    if d.needs or not cls.stacking:
        return None
    tensors = tuple((name, t.shape, t.dtype, t.device) for name, t in d.state_dict().items())
    return cls, tensors, d.cfg.subtract_b_dec, d.cfg.skip, input_key, target_key


def stack_trainees(dictionaries: dict[int, Dictionary], inputs: list[str], targets: list[str], cfg,
                   data_parallel: bool = True) -> dict[int, StackedTrainee]:
    """{index: StackedTrainee} for every group of two or more stackable, compatible dictionaries.

    cfg.stack: "on", "off", or "auto": on CUDA only. On CPU a stack trains at 0.9-1.0x the speed of its
    members one by one (benchmarks/results/kernels.md): the encoder GEMMs, the same FLOPs either way,
    are half the step and the rest is memory-bound; batching pays where kernel launches cost."""
    groups: dict[tuple, dict[int, Dictionary]] = {}
    for i, d in dictionaries.items():
        key = stack_key(d, inputs[i], targets[i])
        if key is not None and (cfg.stack == "on" or (cfg.stack == "auto" and d.W_enc.is_cuda)):
            groups.setdefault(key, {})[i] = d
    out = {}
    for members in groups.values():
        if len(members) > 1:
            trainee = StackedTrainee(members, cfg, data_parallel)
            out.update(dict.fromkeys(members, trainee))
    return out


class StackedTrainee:
    """E dictionaries ({index: dictionary}, compatible by `stack_key`), their stacked parameters,
    one Adam, and each member's count of tokens since each latent fired ([E, d_dict])."""

    def __init__(self, members: dict[int, Dictionary], cfg, data_parallel: bool = True):
        self.ids, self.members, self.data_parallel = list(members), list(members.values()), data_parallel
        first = self.members[0]
        self.stack = nn.Module()
        for name, _ in first.named_parameters():
            p = nn.Parameter(torch.stack([m.get_parameter(name).detach() for m in self.members]))
            p.grad = torch.zeros_like(p)  # kept (zeroed in place) so the members' .grad can be views of it
            self.stack.register_parameter(name, p)
        for name, _ in first.named_buffers():
            self.stack.register_buffer(name, torch.stack([m.get_buffer(name) for m in self.members]))
        for e, m in enumerate(self.members):  # members read, write and accumulate gradients into their slices
            for name, p in self.stack.named_parameters():
                setattr(m, name, nn.Parameter(p.data[e]))
                m.get_parameter(name).grad = p.grad[e]
            for name, b in self.stack.named_buffers():
                setattr(m, name, b[e])
        self.optimizer = torch.optim.Adam(self.stack.parameters(), lr=cfg.lr, betas=(0.9, 0.999), fused=True)
        self.since_fired = torch.zeros(len(self.members), first.d_dict, dtype=torch.long)

    def forward(self, x: torch.Tensor) -> list[TrainingStep]:
        """x [batch, d_in] -> one TrainingStep per member."""
        return type(self.members[0]).stacked_forward(self.stack, self.members, x)

    def step(self, x: torch.Tensor, target: torch.Tensor, lr: float, cfg) -> dict[int, dict[str, float]]:
        """One training step of every member on the same batch; {index: losses}."""
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.autocast):
            steps = self.forward(x)
            parts = [self._loss(e, st, x, target) for e, st in enumerate(steps)]
        for m, (loss, mse, sparsity) in zip(self.members, parts):
            if not torch.isfinite(loss):
                raise FloatingPointError(f"The {m.arch} loss is {loss.item()} (mse {mse.item()}, sparsity {sparsity.item()}); "
                                         "lower --lr or check the activations. The last checkpoint is kept.")
        self.optimizer.zero_grad(set_to_none=False)
        sum(loss for loss, _, _ in parts).backward()
        params = list(self.stack.parameters())
        if self.data_parallel:
            average_gradients(params)
            average_buffers(self.stack)
        if self.members[0].unit_norm_decoder:
            remove_parallel_grad(self.stack.W_dec)
        _clip_per_member(params, cfg.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        if self.members[0].unit_norm_decoder:
            normalize_rows(self.stack.W_dec)
        fired, ranks = torch.stack([st.fired(self.since_fired.shape[1]) for st in steps]), 1
        if self.data_parallel:
            fired, ranks = union(fired), world()[1]
        self.since_fired = torch.where(fired.cpu(), 0, self.since_fired + len(x) * ranks)
        return {i: {"loss": loss.item(), "mse": mse.item(), "l0": st.l0()}
                for i, (loss, mse, _), st in zip(self.ids, parts, steps)}

    def _loss(self, e, st, x, target):
        m = self.members[e]
        mse = reconstruction_loss(st.recon.float(), target)
        sparsity = m.sparsity_loss(st)
        aux = dead_latent_auxk(m, self.since_fired[e], x, target, st.recon)
        return mse + sparsity + m.cfg.aux_coeff * aux, mse, sparsity

    def tensors(self, i: int) -> dict[str, torch.Tensor]:
        """Dictionary i's weights, firing counts and Adam slots, under the keys `Trainee.tensors` uses."""
        e = self.ids.index(i)
        out = {f"d{i}.{k}": v.clone() for k, v in self.members[e].state_dict().items()}
        out[f"d{i}.since_fired"] = self.since_fired[e].clone()
        for pid, slots in self.optimizer.state_dict()["state"].items():
            out.update({f"opt{i}.{pid}.{k}": torch.as_tensor(v if k == "step" else v[e]).clone() for k, v in slots.items()})
        return out

    def load(self, i: int, tensors: dict[str, torch.Tensor]) -> None:
        e, prefix = self.ids.index(i), f"d{i}."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.since_fired[e] = own.pop("since_fired")
        self.members[e].load_state_dict(own)  # copies into the member's slices of the stack
        params = list(self.stack.parameters())
        for key, value in tensors.items():
            if key.startswith(f"opt{i}."):
                _, pid, slot = key.split(".")
                p = params[int(pid)]
                state = self.optimizer.state[p]
                if slot == "step":
                    state["step"] = value.to(device=p.device, dtype=torch.float32).clone()
                else:
                    state.setdefault(slot, torch.zeros_like(p, memory_format=torch.preserve_format))[e].copy_(value)


def _clip_per_member(params: list[torch.Tensor], max_norm: float) -> None:
    """clip_grad_norm_ of each member's gradients (slice e of every stacked parameter), computed as it does."""
    grads = [p.grad for p in params if p.grad is not None]
    for e in range(len(grads[0])):
        clip_grad_norm([g[e] for g in grads], max_norm)
