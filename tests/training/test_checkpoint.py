"""Checkpoints and the settings a run starts from: validated where they enter, with one clear error."""

import json

import pytest
import torch
from safetensors import safe_open

import interp.training.loop as loop
from helpers import TINY, random_dictionary
from interp.data.activations import ActivationStore
from interp.data.tokens import take_contexts
from interp.errors import UserError
from interp.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from interp.training.loop import TrainConfig, train

HOOK = "blocks.1.hook_resid_post"


def store(tiny):
    return ActivationStore(tiny, {"x": HOOK}, n_ctx=32, batch_size=64, block_contexts=8, forward_batch=8)


def sae():
    return random_dictionary("topk", d_in=32, d_dict=64, dtype="float32", hook_in=HOOK, aux_k=8, dead_tokens=256)


@pytest.mark.parametrize("field, value, flag", [("tokens", 0, "--tokens"), ("tokens", -5, "--tokens"),
                                                ("checkpoint_every", 0, "--checkpoint-every"), ("lr", float("nan"), "--lr"),
                                                ("decay_fraction", 1.5, "--decay-fraction")])
def test_train_config_rejects_values_that_would_train_nothing_or_loop(field, value, flag):
    with pytest.raises(UserError, match=f"{field}=.* \\({flag}\\): expected"):
        TrainConfig(**{field: value})


def test_counts_are_validated_where_they_enter(tiny):
    with pytest.raises(UserError, match="batch_size=0 \\(--batch-size\\)"):
        ActivationStore(tiny, {"x": HOOK}, batch_size=0)
    with pytest.raises(UserError, match="n=0 contexts \\(--eval-contexts\\)"):  # not "no context of 32 tokens"
        take_contexts(tiny, "shakespeare", "validation", 32, 0)


def test_resume_accepts_a_changed_checkpoint_every_and_ends_bit_identical(tiny, tmp_path, monkeypatch):
    """The same computation as the uninterrupted run (same reduction order), so bit-equality is the claim."""
    cfg = TrainConfig(tokens=64 * 9, lr=3e-3, checkpoint_every=2)
    (full,) = train([sae()], store(tiny), cfg, tmp_path / "full")
    original, calls = loop.Trainee.step, {"n": 0}

    def dies_after_five(self, *args):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt  # like kill -9 after step 5: the checkpoint of step 4 survives
        return original(self, *args)

    monkeypatch.setattr(loop.Trainee, "step", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        train([sae()], store(tiny), cfg, tmp_path / "cut")
    monkeypatch.setattr(loop.Trainee, "step", original)
    assert load_checkpoint(tmp_path / "cut")[0]["step"] == 4
    (resumed,) = train([sae()], store(tiny), TrainConfig(tokens=64 * 9, lr=3e-3, checkpoint_every=3), tmp_path / "cut",
                       resume=True)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in full.state_dict().items())


def rewrite_state(folder, change):
    path = folder / CHECKPOINT
    with safe_open(path, framework="pt") as f:
        state, tensors = json.loads(f.metadata()["state"]), {k: f.get_tensor(k) for k in f.keys()}
    state, tensors = change(state, tensors)
    save_checkpoint(folder, state, tensors)


@pytest.fixture
def finished(tiny, tmp_path):
    train([sae()], store(tiny), TrainConfig(tokens=64 * 2, checkpoint_every=1), tmp_path)
    return tmp_path


def test_a_checkpoint_beyond_the_run_length_is_refused(tiny, finished):
    rewrite_state(finished, lambda s, t: ({**s, "step": 99}, t))
    with pytest.raises(UserError, match="at step 99, beyond this run's 2 steps"):
        train([sae()], store(tiny), TrainConfig(tokens=64 * 2, checkpoint_every=1), finished, resume=True)


@pytest.mark.parametrize("change, message", [
    (lambda s, t: ({k: v for k, v in s.items() if k != "step"}, t), "missing field\\(s\\) \\['step'\\]"),
    (lambda s, t: ({k: v for k, v in s.items() if k != "store"}, t), "missing field\\(s\\) \\['store'\\]"),
    (lambda s, t: ({**s, "step": "3"}, t), "step '3' is not a step count"),
    (lambda s, t: (s, {k: v for k, v in t.items() if not k.startswith("d0.")}), "no tensors for dictionary 0"),
    (lambda s, t: ([1, 2], t), "not a JSON object"),
])
def test_a_checkpoint_missing_a_field_is_one_clear_error_naming_it(finished, change, message):
    rewrite_state(finished, change)
    with pytest.raises(UserError, match=message) as err:
        load_checkpoint(finished)
    assert str(finished / CHECKPOINT) in str(err.value)


@pytest.mark.parametrize("data", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{}", b"\xff" * 64])
def test_a_foreign_or_truncated_checkpoint_is_unreadable_not_a_traceback(tmp_path, data):
    (tmp_path / CHECKPOINT).write_bytes(data)
    with pytest.raises(UserError, match=f"Checkpoint {tmp_path / CHECKPOINT} is unreadable"):
        load_checkpoint(tmp_path)


def test_kill_9_mid_run_leaves_a_folder_that_resumes_to_the_same_weights(tmp_path):
    """kill -9 (no handler runs, the lock is dropped by the kernel): --resume ends bit-identical to a full run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    args = [sys.executable, "-m", "interp", "train", "--model", TINY,
            "--hook", HOOK, "--tokens", str(64 * 600), "--batch-size", "64", "--n-ctx", "32", "--width", "128", "--k", "8",
            "--checkpoint-every", "25", "--eval-contexts", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(args + ["--out", str(tmp_path / "full")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(args + ["--out", str(tmp_path / "cut")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (tmp_path / "cut" / CHECKPOINT).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "cut" / "sae.safetensors").exists()
    assert 0 < load_checkpoint(tmp_path / "cut")[0]["step"] < 600
    subprocess.run(args + ["--out", str(tmp_path / "cut"), "--resume"], check=True, env=env, capture_output=True)
    full, resumed = load_file(tmp_path / "full" / "sae.safetensors"), load_file(tmp_path / "cut" / "sae.safetensors")
    assert all(torch.equal(full[k], resumed[k]) for k in full)
