"""Data-parallel training on CPU with gloo and two processes."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from helpers import FixedStore
from interp.dictionary import DictionaryConfig, architecture
from interp.training.loop import TrainConfig, train

D, B, STEPS = 16, 64, 12




def data():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(48, D, generator=g)
    codes = torch.rand(STEPS * B, 48, generator=g) * (torch.rand(STEPS * B, 48, generator=g) < 0.1)
    return codes @ basis


def dictionary(arch):
    # AuxK off: each rank counts dead latents on its own shard, so with AuxK two ranks are not one summed batch.
    fields = {"k": 4, "aux_k": 0} if arch == "topk" else {"l1_coeff": 0.5}
    return architecture(arch)(DictionaryConfig(arch=arch, d_in=D, d_dict=64, **fields))


def _rank(rank, world, folder, arch):
    import saes  # noqa: F401

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    torch.set_num_threads(1)
    (out,) = train([dictionary(arch)], FixedStore({"x": data()}, B, rank, world), TrainConfig(tokens=STEPS * B, lr=3e-3),
                   f"{folder}/ddp")
    save_file(out.state_dict(), f"{folder}/rank{rank}.safetensors")
    dist.destroy_process_group()


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_two_ranks_equal_one_rank_with_the_summed_batch(tmp_path, arch):
    mp.spawn(_rank, args=(2, str(tmp_path), arch), nprocs=2, join=True)
    (single,) = train([dictionary(arch)], FixedStore({"x": data()}, B), TrainConfig(tokens=STEPS * B, lr=3e-3), tmp_path / "one")
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    for name, value in single.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # ranks stay identical
        assert torch.allclose(ranks[0][name], value, atol=2e-5), (name, (ranks[0][name] - value).abs().max())


def sweep():
    """Three dictionaries for two ranks: rank 0 trains the first and third, rank 1 the second."""
    relu = architecture("relu")(DictionaryConfig(arch="relu", d_in=D, d_dict=48, l1_coeff=0.5))
    return [dictionary("topk"), relu, architecture("topk")(DictionaryConfig(arch="topk", d_in=D, d_dict=32, k=8))]


class Interrupt(Exception):
    pass


def _module_rank(rank, world, folder, interrupt):
    import saes  # noqa: F401

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    torch.set_num_threads(1)
    cfg = TrainConfig(tokens=STEPS * B, lr=3e-3, parallel="module", checkpoint_every=5)
    if interrupt:  # both ranks stop after step 7; the checkpoint of step 5 survives
        def stop(step, logs):
            assert len(logs) == 3  # every dictionary's losses, gathered from both ranks
            if step == 7:
                raise Interrupt

        with pytest.raises(Interrupt):
            train(sweep(), FixedStore({"x": data()}, B, rank, world), cfg, f"{folder}/module", log=stop)
    out = train(sweep(), FixedStore({"x": data()}, B, rank, world), cfg, f"{folder}/module", resume=interrupt)
    save_file({f"{i}.{k}": v for i, d in enumerate(out) for k, v in d.state_dict().items()}, f"{folder}/rank{rank}.safetensors")
    dist.destroy_process_group()


@pytest.mark.parametrize("interrupt", [False, True], ids=["straight", "interrupted-and-resumed"])
def test_module_parallel_two_ranks_equal_one_process_training_every_dictionary(tmp_path, interrupt):
    mp.spawn(_module_rank, args=(2, str(tmp_path), interrupt), nprocs=2, join=True)
    single = train(sweep(), FixedStore({"x": data()}, B), TrainConfig(tokens=STEPS * B, lr=3e-3), tmp_path / "one")
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    for i, d in enumerate(single):
        for name, value in d.state_dict().items():
            key = f"{i}.{name}"
            assert torch.equal(ranks[0][key], ranks[1][key]), key  # every rank returns every dictionary
            assert torch.allclose(ranks[0][key], value, atol=2e-5), (key, (ranks[0][key] - value).abs().max())


def test_module_parallel_needs_a_dictionary_per_rank(tmp_path, monkeypatch):
    import interp.training.loop as t

    monkeypatch.setattr(t, "world", lambda: (0, 4))
    with pytest.raises(ValueError, match="at least 4 dictionaries"):
        train(sweep(), FixedStore({"x": data()}, B), TrainConfig(tokens=B, parallel="module"), tmp_path)


TINY = "tiny:n_layers=2,d_model=32,n_heads=4,d_mlp=64,n_ctx=64"


def torchrun(tmp_path, out, extra=(), **kw):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"line {i} " + "to be or not to be " * (i % 7 + 1) for i in range(300)))
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(29500 + os.getpid() % 1000),
            "-m", "interp", "train", "--model", TINY, "--hook", "blocks.1.hook_resid_post", "--source", str(corpus),
            "--n-ctx", "32", "--batch-size", "128", "--width", "128", "--k", "8", "--eval-contexts", "2",
            "--checkpoint-every", "10", "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kw)


@pytest.mark.slow
def test_torchrun_uneven_shards_finish_and_a_killed_rank_resumes(tmp_path):
    """The corpus's last block is short and only one rank gets it: nothing may hang. Kill one rank, resume both."""
    full = torchrun(tmp_path, tmp_path / "full", ["--tokens", str(128 * 300)])
    _, err = full.communicate(timeout=600)
    assert full.returncode == 0, err.decode()[-3000:]
    cut = torchrun(tmp_path, tmp_path / "cut", ["--tokens", str(128 * 300)])
    ckpt = tmp_path / "cut" / "checkpoint.safetensors"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and cut.poll() is None:
        time.sleep(0.05)
    ranks = subprocess.run(["pgrep", "-f", "-s", str(cut.pid), "interp train"], capture_output=True, text=True).stdout.split()
    os.kill(int(ranks[-1]), signal.SIGTERM)  # one rank only
    _, err = cut.communicate(timeout=300)
    assert cut.returncode != 0 and not (tmp_path / "cut" / "sae.safetensors").exists(), err.decode()[-3000:]
    resumed = torchrun(tmp_path, tmp_path / "cut", ["--tokens", str(128 * 300), "--resume"])
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()[-3000:]
    a, b = load_file(tmp_path / "full" / "sae.safetensors"), load_file(tmp_path / "cut" / "sae.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_torchrun_module_parallel_sweep_matches_data_parallel(tmp_path):
    """`--parallel module`: each rank trains one sweep member on the gathered batch, the batch data-parallel ranks split.

    AuxK is off: it normalises by the variance of the batch a rank sees, which data-parallel ranks measure on half."""
    for mode in ("data", "module"):
        proc = torchrun(tmp_path, tmp_path / mode, ["--tokens", str(128 * 20), "--k", "4,8", "--aux-k", "0", "--parallel", mode])
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-3000:]
    for k in (4, 8):
        a, b = (load_file(tmp_path / mode / f"k{k}" / "sae.safetensors") for mode in ("data", "module"))
        assert all(torch.allclose(a[n], b[n], atol=1e-4) for n in a), {n: (a[n] - b[n]).abs().max().item() for n in a}
        assert (tmp_path / "module" / f"k{k}" / "metrics.json").exists()
