import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from interp.cli import main

TINY = "tiny:n_layers=2,d_model=32,n_heads=4,d_mlp=64,n_ctx=64"
SMALL = ["--model", TINY, "--hook", "blocks.1.hook_resid_post", "--n-ctx", "32", "--batch-size", "128",
         "--tokens", str(128 * 30), "--eval-contexts", "4", "--lr", "3e-3"]
METRICS = {"l0", "mse", "fvu", "explained_variance", "cos_sim", "ce_loss_clean", "ce_loss_spliced", "ce_loss_zero_ablation",
           "ce_recovered", "kl_spliced", "dead_fraction", "dense_fraction", "tokens_trained"}


def test_help_documents_every_command(capsys):
    out = subprocess.run([sys.executable, "-m", "interp", "--help"], capture_output=True, text=True, check=True).stdout
    assert "train" in out and "eval" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    train_help = capsys.readouterr().out
    for flag in ("--model", "--hook", "--arch", "--width", "--k", "--l1-coeff", "--tokens", "--batch-size", "--lr",
                 "--seed", "--device", "--dtype", "--out", "--resume"):
        assert flag in train_help


def test_train_then_eval_reproduces_metrics(tmp_path):
    assert main(["train", *SMALL, "--out", str(tmp_path / "run")]) == 0
    run = tmp_path / "run"
    cfg = json.loads((run / "cfg.json").read_text())
    assert cfg["arch"] == "topk" and cfg["k"] == 32 and cfg["d_dict"] == 256 and cfg["model"] == TINY
    assert cfg["hook_in"] == "blocks.1.hook_resid_post" and cfg["training"]["tokens"] == 128 * 30
    assert set(load_file(run / "sae.safetensors")) == {"W_enc", "b_enc", "W_dec", "b_dec"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert METRICS <= set(metrics) and (run / "density.html").stat().st_size > 1000
    assert main(["eval", str(run), "--n-ctx", "32", "--eval-contexts", "4"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert all(abs(again[k] - metrics[k]) < 1e-6 for k in METRICS)


def test_sweep_writes_one_folder_per_member(tmp_path):
    assert main(["train", *SMALL, "--arch", "relu", "--l1-coeff", "0.1,1", "--out", str(tmp_path / "sweep")]) == 0
    for name in ("l1_coeff0.1", "l1_coeff1"):
        assert json.loads((tmp_path / "sweep" / name / "cfg.json").read_text())["l1_coeff"] == float(name[8:])
    l0 = [json.loads((tmp_path / "sweep" / n / "metrics.json").read_text())["l0"] for n in ("l1_coeff0.1", "l1_coeff1")]
    assert l0[0] > l0[1]


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    args = ["train", *SMALL[:-4], "--tokens", "256", "--eval-contexts", "2", "--out", str(tmp_path)]
    assert main([*args, "--keep-checkpoint"]) == 0
    assert (tmp_path / "checkpoint.safetensors").exists()  # removed after a finished run unless --keep-checkpoint
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--hook", "blocks.9.hook_resid_post"], ["--width=-4"]])
def test_bad_arguments_give_one_clear_line(tmp_path, capsys, bad):
    assert main(["train", *SMALL, "--out", str(tmp_path / "x"), *bad]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_transcoder_from_the_command_line(tmp_path):
    args = ["train", *SMALL, "--transcoder", "--layer", "1", "--skip", "--k", "8", "--out", str(tmp_path)]
    assert main(args) == 0
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert (cfg["hook_in"], cfg["hook_out"]) == ("blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out")
    assert cfg["skip"] and not cfg["subtract_b_dec"]
    assert "W_skip" in load_file(tmp_path / "sae.safetensors")
    assert json.loads((tmp_path / "metrics.json").read_text())["fvu"] < 1


def test_one_dictionary_per_hook_from_one_model_pass(tmp_path):
    hooks = "blocks.0.hook_resid_post,blocks.1.hook_mlp_out"
    assert main(["train", *SMALL, "--hook", hooks, "--k", "4,8", "--tokens", "512", "--out", str(tmp_path)]) == 0
    for hook in hooks.split(","):
        for k in (4, 8):
            cfg = json.loads((tmp_path / f"{hook}-k{k}" / "cfg.json").read_text())
            assert (cfg["hook_in"], cfg["k"]) == (hook, k)


def test_training_from_a_finished_cache_shuffled_across_shards(tmp_path, capsys):
    cache = str(tmp_path / "cache")
    assert main(["train", *SMALL, "--tokens", str(128 * 130), "--cache-dir", cache, "--out", str(tmp_path / "write")]) == 0
    assert len(list((tmp_path / "cache").glob("block_*.safetensors"))) == 3  # 7,936 rows a shard
    args = ["train", *SMALL, "--cache-dir", cache, "--shuffle-shards", "2", "--tokens", str(128 * 260)]  # past one pass
    assert main([*args, "--out", str(tmp_path / "read")]) == 0
    assert json.loads((tmp_path / "read" / "metrics.json").read_text())["fvu"] < 1
    capsys.readouterr()
    assert main([*args, "--hook", "blocks.0.hook_resid_post", "--out", str(tmp_path / "other")]) == 2
    assert "harvested with hooks" in capsys.readouterr().err
