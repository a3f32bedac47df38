"""Data- and module-parallel training with torch.distributed (torchrun sets the environment).

Each rank harvests its own shard of the token stream (blocks rank, rank+world,
...), computes gradients on its share of every step's batch, and the
gradients are averaged with an all-reduce before clipping and the optimizer
step, so N ranks with batch B/N step exactly like one rank with batch B. Rank 0
writes checkpoints and run folders; every rank resumes from the same
checkpoint. Streams cycle over their source, so shards of unequal size never
leave a rank waiting at a collective.

Module-parallel training (sweeps, many hooks) shares one model pass instead:
each rank still harvests its own shard, `gather_batches` concatenates every
rank's batch so all ranks see the same full batch, and rank r trains only
dictionaries r, r + world, ... with no gradient all-reduce.

Backends: NCCL for CUDA, gloo for CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str) -> str:
    """Join the process group torchrun describes (if any); return this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return device
    cuda = device.startswith("cuda")
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def is_main() -> bool:
    return world()[0] == 0


def average_gradients(params) -> None:
    _, size = world()
    if size == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= size


def average_buffers(module: torch.nn.Module) -> None:
    """Keep statistics learned from local batches (e.g. BatchTopK's threshold) equal on every rank."""
    _, size = world()
    if size == 1:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b, op=dist.ReduceOp.SUM)
            b /= size


def union(mask: torch.Tensor) -> torch.Tensor:
    """Element-wise OR of a bool tensor across ranks."""
    if world()[1] == 1:
        return mask
    as_int = mask.to(torch.uint8)
    dist.all_reduce(as_int, op=dist.ReduceOp.MAX)
    return as_int.bool()


def any_rank(flag: bool) -> bool:
    if world()[1] == 1:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers to every rank."""
    if world()[1] == 1:
        return
    for t in module.state_dict().values():
        dist.broadcast(t, src=src)


def broadcast_object(obj):
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's `obj` (in-memory objects between our own processes), in rank order."""
    _, size = world()
    if size == 1:
        return [obj]
    out = [None] * size
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj) -> list | None:
    """Every rank's `obj` in rank order on rank 0 (None elsewhere); objects travel pickled between our own processes."""
    rank, size = world()
    if size == 1:
        return [obj]
    out = [None] * size if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def gather_batches(stream: Iterator[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    """Each batch of `stream` joined with the other ranks' ({key: [world * b, d]}, rank 0's rows first)."""
    _, size = world()
    for batch in stream:
        if size == 1:
            yield batch
            continue
        out = {}
        for key, rows in batch.items():
            parts = [torch.empty_like(rows) for _ in range(size)]
            dist.all_gather(parts, rows.contiguous())
            out[key] = torch.cat(parts)
        yield out
