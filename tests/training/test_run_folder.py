"""Run folders as transactions (interp.training.run_folder): nothing finished is replaced without
overwrite, one process trains into a folder at a time, and a dead holder never blocks."""

import os
import subprocess
import sys
import textwrap

import pytest
from safetensors.torch import save_file

import torch
from helpers import TINY, random_dictionary
from interp.cli import main
from interp.errors import UserError
from interp.training import run_folder
from interp.training.checkpoint import CHECKPOINT
from interp.training.loop import TrainConfig, train
from interp.training.runs import train_and_save

SMALL = ["train", "--model", TINY, "--hook", "blocks.1.hook_resid_post", "--n-ctx", "32", "--batch-size", "128",
         "--tokens", "256", "--eval-contexts", "2"]


def saelens_folder(folder):
    """A finished run in SAELens's layout (no checkpoint, no sae.safetensors)."""
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text('{"d_in": 8}')
    save_file({"W_enc": torch.zeros(8, 16)}, folder / "sae_weights.safetensors")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("layout", ["ours", "saelens", "sweep-member"])
def test_a_finished_run_without_checkpoint_is_never_replaced(tmp_path, capsys, layout):
    out = tmp_path / "run"
    if layout == "saelens":
        before = saelens_folder(out)
    else:
        random_dictionary("topk").save(out / "k16" if layout == "sweep-member" else out)
        before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main([*SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "finished run" in err and "--overwrite" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before
    with pytest.raises(UserError, match="overwrite=True"):  # the Python API is guarded too, before any work
        train_and_save(None, None, [], TrainConfig(), out, None)
    with pytest.raises(UserError, match="nothing to resume"):
        train([], None, TrainConfig(), out, resume=True)


def test_overwrite_replaces_and_a_checkpoint_needs_resume_or_overwrite(tiny, tmp_path):
    from interp.data.activations import ActivationStore

    out = tmp_path / "run"
    saelens_folder(out)
    store = ActivationStore(tiny, {"x": "blocks.1.hook_resid_post"}, n_ctx=32, batch_size=64, block_contexts=8)
    d = random_dictionary("topk", d_in=32, d_dict=64, dtype="float32", hook_in="blocks.1.hook_resid_post")
    train([d], store, TrainConfig(tokens=64 * 2, checkpoint_every=1), out, overwrite=True)
    assert (out / CHECKPOINT).exists()  # train() leaves the checkpoint; train_and_save removes it at the end
    with pytest.raises(UserError, match="training checkpoint of an earlier run"):
        train([d], store, TrainConfig(tokens=64 * 2), out)
    train([d], store, TrainConfig(tokens=64 * 2, checkpoint_every=1), out, resume=True)


HOLDER = textwrap.dedent("""
    import sys
    from interp.training import run_folder
    run_folder.acquire(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the test closes stdin (or kills us)
""")


def test_a_second_process_gets_a_clear_error_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f'"pid": {holder.pid}'):
            run_folder.acquire(out)
        assert main([*SMALL, "--out", str(out)]) == 2  # before the model loads
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f'"pid": {holder.pid}' in err and "is locked" in err
    finally:
        holder.kill()  # like kill -9: the kernel drops the lock; the stale .lock file blocks nobody
        holder.wait()
    with run_folder.claim(out):
        assert f'"pid": {os.getpid()}' in (out / run_folder.LOCK_FILE).read_text()
        with run_folder.claim(out):  # a nested claim (train_and_save -> train) shares the lock
            pass
        assert out.absolute() in run_folder._held
    assert out.absolute() not in run_folder._held


def test_an_unwritable_out_fails_before_the_model_loads(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main([*SMALL, "--model", str(tmp_path / "no-such-model"), "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Cannot write to the run folder" in err and "no-such-model" not in err
