"""Hub repo ids resolve through huggingface_hub's cache, offline (HF_HUB_OFFLINE=1): never the network."""

import numpy as np
import pytest
import torch

from helpers import random_dictionary
from interp.io import load_dictionary, load_transcoder_set
from interp.io.circuit_tracer import save_circuit_tracer_set

REV = "0123456789abcdef0123456789abcdef01234567"
SUB = "layer_3/width_16k/average_l0_71"


def cached_repo(hub_cache, repo_id):
    """The snapshot folder of `repo_id` laid out as huggingface_hub lays out its cache:
    models--owner--name/refs/main holds the commit; snapshots/<commit>/ holds the files."""
    root = hub_cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(REV)
    snapshot = root / "snapshots" / REV
    snapshot.mkdir(parents=True)
    return snapshot


def gemma_npz(folder, d=8, f=16):
    folder.mkdir(parents=True)
    g = np.random.default_rng(0)
    np.savez(folder / "params.npz", W_enc=g.normal(size=(d, f)).astype("float32"), W_dec=g.normal(size=(f, d)).astype("float32"),
             b_enc=np.zeros(f, "float32"), b_dec=np.zeros(d, "float32"), threshold=np.full(f, 0.1, "float32"))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf" / "hub"


def test_repo_id_resolves_from_the_cache(offline):
    gemma_npz(cached_repo(offline, "google/gemma-scope-2b-pt-res") / SUB)
    d = load_dictionary("google/gemma-scope-2b-pt-res", SUB)
    assert d.cfg.hook_in == "blocks.3.hook_resid_post" and d.cfg.model == "gemma-2-2b" and d.d_dict == 16
    assert d.cfg.training == {"source": f"google/gemma-scope-2b-pt-res/{SUB}"}


def test_hf_hub_cache_wins_over_hf_home(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    random_dictionary("topk", hook_in="blocks.0.hook_resid_post").save(cached_repo(tmp_path / "elsewhere", "me/saes") / "topk")
    assert load_dictionary("me/saes", "topk").cfg.k == 4


def test_offline_without_cache_names_the_repo_and_files(offline):
    with pytest.raises(FileNotFoundError, match=r"no local path google/gemma-scope-2b-pt-res .*; "
                       r"as a hub repo google/gemma-scope-2b-pt-res \(files .*params\.npz.*HF_HUB_OFFLINE is set"):
        load_dictionary("google/gemma-scope-2b-pt-res", SUB)


def test_missing_subfolder_in_a_cached_repo(offline):
    gemma_npz(cached_repo(offline, "google/gemma-scope-2b-pt-res") / SUB)
    with pytest.raises(FileNotFoundError, match="no folder 'layer_9'"):
        load_dictionary("google/gemma-scope-2b-pt-res", "layer_9")


def test_circuit_tracer_hf_uris_resolve_offline(offline, tmp_path):
    """A config naming hf://owner/repo/file, as circuit-tracer's configs do; the repo itself as a 0.5.0 release."""
    snapshot = cached_repo(offline, "me/transcoders")
    tcs = {layer: random_dictionary("relu", seed=layer, subtract_b_dec=False, hook_in=f"blocks.{layer}.ln2.hook_normalized",
                                    hook_out=f"blocks.{layer}.hook_mlp_out") for layer in (0, 1)}
    save_circuit_tracer_set(tcs, snapshot)
    config = tmp_path / "set.yaml"  # circuit-tracer 0.5.0's config: `transcoders` lists one file per layer
    config.write_text((snapshot / "config.yaml").read_text() + "transcoders:\n"
                      + "".join(f"  - hf://me/transcoders/layer_{layer}.safetensors\n" for layer in (0, 1)))
    loaded = load_transcoder_set(config)
    x = torch.randn(4, 8, dtype=torch.float64)
    assert all(torch.equal(loaded[layer](x), tcs[layer](x)) for layer in (0, 1))
    assert load_transcoder_set("me/transcoders")[1].cfg.hook_out == "blocks.1.hook_mlp_out"


def test_cli_offline_error_is_one_line_and_exit_2(offline, capsys):
    from interp.cli import main

    assert main(["eval", "google/gemma-scope-2b-pt-res:" + SUB, "--model", "tiny"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no local path google/gemma-scope-2b-pt-res") and "HF_HUB_OFFLINE" in lines[0]
