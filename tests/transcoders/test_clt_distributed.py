"""Data-parallel CLT training on CPU with gloo and two processes (as tests/test_distributed.py does for the
shared loop): two ranks with half a batch each step like one process with the whole batch."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from helpers import FixedStore
from interp.training.checkpoint import load_checkpoint
from interp.training.loop import TrainConfig
from transcoders.clt import CLTConfig, CrossLayerTranscoder
from transcoders.clt_train import train_clt

L, D, B, STEPS = 3, 8, 64, 16
CFG = TrainConfig(tokens=STEPS * B, lr=2e-2, warmup_steps=2, checkpoint_every=5)


def data() -> dict[str, torch.Tensor]:
    """MLP inputs x0..x2 [STEPS * B, D] and outputs target0..target2, each output reading its own and earlier
    layers' inputs (so cross-layer decoders have something to learn)."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(STEPS * B, D, generator=g) for _ in range(L)]
    maps = [[torch.randn(D, D, generator=g) / D**0.5 for _ in range(L)] for _ in range(L)]
    targets = [sum(torch.relu(xs[l]) @ maps[m][l] for l in range(m + 1)) for m in range(L)]
    return {**{f"x{l}": x for l, x in enumerate(xs)}, **{f"target{m}": t for m, t in enumerate(targets)}}


def clt():
    return CrossLayerTranscoder(CLTConfig(n_layers=L, d_model=D, d_dict=16, k=4))


def _rank(rank, world, folder):
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    torch.set_num_threads(1)
    out = train_clt(clt(), FixedStore(data(), B, rank, world), CFG, f"{folder}/ddp")
    save_file({k: v.contiguous() for k, v in out.state_dict().items()}, f"{folder}/rank{rank}.safetensors")
    dist.destroy_process_group()


def test_two_ranks_equal_one_process_with_the_whole_batch(tmp_path):
    mp.spawn(_rank, args=(2, str(tmp_path)), nprocs=2, join=True)
    losses = []
    single = train_clt(clt(), FixedStore(data(), B), CFG, tmp_path / "one", log=lambda step, s: losses.append(s["mse"]))
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4])  # it learned: the comparison is not between two untrained copies
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    assert single.W_dec[0][:, 1:].abs().max() > 1e-3  # cross-layer decoders moved off their zero start
    for name, value in single.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # the same all-reduced steps: ranks stay identical
        torch.testing.assert_close(ranks[0][name], value, rtol=0, atol=2e-5, msg=lambda m: f"{name}: {m}")
    state, _ = load_checkpoint(tmp_path / "ddp")  # rank 0 wrote it, with each rank's place in its shard
    assert state["world_size"] == 2 and state["store"] == [{"block": STEPS, "served": 0}] * 2
