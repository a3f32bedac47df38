"""Stacked training (interp.training.stacked) against training each member on its own."""

import copy

import pytest
import torch

import interp.training.loop as train_module
from interp.dictionary import DictionaryConfig, architecture
from interp.training.stacked import StackedTrainee, stack_key, stack_trainees
from interp.training.loop import TrainConfig, Trainee, train

SWEEPS = {  # one stack per case: members differ in their sparsity settings
    "topk": [{"k": 3}, {"k": 8}, {"k": 5}],
    "topk-skip-transcoder": [{"k": 3, "skip": True, "subtract_b_dec": False, "d_out": 10}, {"k": 6, "skip": True,
                                                                                           "subtract_b_dec": False, "d_out": 10}],
    "batchtopk": [{"k": 3}, {"k": 6}],
    "relu": [{"l1_coeff": 0.1}, {"l1_coeff": 1.0}, {"l1_coeff": 3.0}],
    "jumprelu": [{"l0_coeff": 0.05, "bandwidth": 0.5}, {"l0_coeff": 0.5, "bandwidth": 0.2}],
}


def members(case, d_in=12, d_dict=48):
    arch = case.split("-")[0]
    out = []
    for seed, fields in enumerate(SWEEPS[case]):
        cfg = DictionaryConfig(arch=arch, d_in=d_in, d_dict=d_dict, dtype="float64", aux_k=4, dead_tokens=40, **fields)
        d = architecture(arch)(cfg)
        g = torch.Generator().manual_seed(seed)  # different inits, so a mix-up of members shows
        x = torch.randn(64, d_in, generator=g, dtype=torch.float64)
        d.init_from_data(x, torch.randn(64, d.d_out, generator=g, dtype=torch.float64), g)
        out.append(d)
    return out


@pytest.mark.parametrize("case", list(SWEEPS))
def test_stacked_steps_equal_one_by_one(case):
    """Same batches, 8 steps (AuxK starts after 40 tokens): every weight, buffer, firing count and
    loss of a stacked member equals that member trained alone (to 1e-12 in float64; the float32
    sweep through train(): test_train_stacks_the_sweep_and_matches_unstacked)."""
    cfg = TrainConfig(lr=3e-2, grad_clip=0.5)
    alone = members(case)
    stacked = copy.deepcopy(alone)
    singles = [Trainee(d, cfg) for d in alone]
    stack = StackedTrainee(dict(enumerate(stacked)), cfg)
    g = torch.Generator().manual_seed(7)
    for step in range(8):
        x = torch.randn(16, 12, generator=g, dtype=torch.float64) * 2
        y = x[:, :10] * 3 if alone[0].d_out == 10 else x
        logs = stack.step(x, y, cfg.lr_at(step, 8), cfg)
        for i, t in enumerate(singles):
            want = t.step(x, y, {}, cfg.lr_at(step, 8), cfg)
            assert logs[i] == pytest.approx(want, rel=1e-12, abs=1e-15)
    for e, (a, b) in enumerate(zip(stacked, alone)):
        for name, want in b.state_dict().items():
            torch.testing.assert_close(a.state_dict()[name], want, rtol=1e-12, atol=1e-15, msg=lambda m: f"{e} {name}: {m}")
        assert torch.equal(stack.since_fired[e], singles[e].since_fired)
    if "k" in SWEEPS[case][0]:
        assert any(t.since_fired.max() >= 40 for t in singles)  # AuxK was on


def test_which_dictionaries_stack():
    a, b, c = members("topk")
    relu = members("relu")[0]
    wide = architecture("topk")(a.cfg.replace(d_dict=64))
    gsae = architecture("gsae")(a.cfg.replace(arch="gsae", beta=1.0))
    assert stack_key(a, "x", "x") == stack_key(b, "x", "x") != stack_key(a, "x", "y")
    assert stack_key(relu, "x", "x") != stack_key(a, "x", "x") != stack_key(wide, "x", "x")
    assert stack_key(gsae, "x", "x") is None  # its selection needs the gradient stream
    six = dict(enumerate([a, relu, b, wide, c, gsae]))
    groups = stack_trainees(six, ["x"] * 6, ["x"] * 6, TrainConfig(stack="on"))
    assert sorted(groups) == [0, 2, 4] and groups[0] is groups[2] is groups[4]
    assert stack_trainees(six, ["x"] * 6, ["x"] * 6, TrainConfig()) == {}  # "auto": on CUDA only


def test_members_hold_the_stacks_weights():
    a, b = members("relu")[:2]
    stack = StackedTrainee({3: a, 5: b}, TrainConfig())
    with torch.no_grad():
        stack.stack.W_dec[1].fill_(2.0)
        a.b_enc.fill_(-1.0)
    assert (b.W_dec == 2).all() and (stack.stack.b_enc[0] == -1).all()
    tensors = stack.tensors(5)
    assert set(tensors) == set(Trainee(copy.deepcopy(b), TrainConfig()).tensors(5))


HOOK = "blocks.1.hook_resid_post"


def make_store(model):
    from interp.data.activations import ActivationStore

    return ActivationStore(model, {"x": HOOK}, n_ctx=32, batch_size=128, block_contexts=32, forward_batch=16)


def sweep():
    base = DictionaryConfig(arch="topk", d_in=32, d_dict=128, hook_in=HOOK, aux_k=16, dead_tokens=600)
    return [architecture("topk")(base.replace(k=k)) for k in (4, 8)] + \
        [architecture("relu")(base.replace(arch="relu", l1_coeff=0.3))]


def test_train_stacks_the_sweep_and_matches_unstacked(tiny, tmp_path, monkeypatch):
    cfg = TrainConfig(tokens=128 * 10, lr=3e-3, checkpoint_every=1000, stack="on")
    calls = []
    monkeypatch.setattr(StackedTrainee, "step", lambda self, *a, _step=StackedTrainee.step: calls.append(self.ids) or _step(self, *a))
    stacked = train(sweep(), make_store(tiny), cfg, tmp_path / "stacked")
    assert calls == [[0, 1]] * 10  # the two TopK members step together; the ReLU SAE alone
    alone = train(sweep(), make_store(tiny), TrainConfig(**{**cfg.__dict__, "stack": "off"}), tmp_path / "alone")
    assert_same_weights(stacked, alone)


def assert_same_weights(got, want, rtol=1e-5, atol=1e-6):
    """Stacked and one-by-one training are different GEMMs: equal up to float32 rounding, which another
    CPU's BLAS may do differently (bit-equality holds only for the same computation, e.g. a resume)."""
    for e, (a, b) in enumerate(zip(got, want)):
        for name, v in b.state_dict().items():
            torch.testing.assert_close(a.state_dict()[name], v, rtol=rtol, atol=atol, msg=lambda m: f"{e} {name}: {m}")


def test_stacked_resume_equals_uninterrupted(tiny, tmp_path, monkeypatch):
    cfg = TrainConfig(tokens=128 * 12, lr=1e-3, checkpoint_every=5, stack="on")
    full = train(sweep(), make_store(tiny), cfg, tmp_path / "full")
    original, calls = StackedTrainee.step, {"n": 0}

    def crashing(self, *a):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt  # the process dies after step 7; the checkpoint of step 5 survives
        return original(self, *a)

    monkeypatch.setattr(StackedTrainee, "step", crashing)
    with pytest.raises(KeyboardInterrupt):
        train(sweep(), make_store(tiny), cfg, tmp_path / "cut")
    monkeypatch.setattr(StackedTrainee, "step", original)
    resumed = train(sweep(), make_store(tiny), cfg, tmp_path / "cut", resume=True)
    for a, b in zip(resumed, full):
        assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert train_module.load_checkpoint(tmp_path / "cut")[0]["step"] == 12


def _data_parallel_rank(rank, world, folder, stack):
    import torch.distributed as dist
    from safetensors.torch import save_file
    from helpers import FixedStore
    from test_distributed import STEPS, B, data

    import saes  # noqa: F401

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous-{stack}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    base = DictionaryConfig(arch="topk", d_in=16, d_dict=64, k=4, aux_k=8, dead_tokens=128)
    sweep = [architecture("topk")(base.replace(k=k)) for k in (4, 8)] + \
        [architecture("batchtopk")(base.replace(arch="batchtopk", k=k)) for k in (4, 8)]
    out = train(sweep, FixedStore({"x": data()}, B, rank, world), TrainConfig(tokens=STEPS * B, lr=3e-3, stack=stack),
                f"{folder}/{stack}")
    save_file({f"{i}.{k}": v for i, d in enumerate(out) for k, v in d.state_dict().items()},
              f"{folder}/{stack}-rank{rank}.safetensors")
    dist.destroy_process_group()


def test_data_parallel_stacks_equal_data_parallel_members(tmp_path):
    """Two ranks (AuxK on): gradients and BatchTopK thresholds averaged over the stack give what they give per member."""
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    for stack in ("on", "off"):
        mp.spawn(_data_parallel_rank, args=(2, str(tmp_path), stack), nprocs=2, join=True)
    on, off = (load_file(tmp_path / f"{stack}-rank0.safetensors") for stack in ("on", "off"))
    assert len(on) == len(off) == 18
    for k, v in off.items():  # AuxK's gradient reaches the stack through a member's .grad view: sums may differ by an ulp
        torch.testing.assert_close(on[k], v, rtol=1e-6, atol=1e-7, msg=lambda m: f"{k}: {m}")
