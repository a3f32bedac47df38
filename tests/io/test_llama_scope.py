"""Llama Scope folders (hyperparams.json + checkpoints/final.safetensors, as in fnlp/Llama3_1-8B-Base-LX*-8x):
known answers with the dataset-wise norm folded in, written by hand from the formula in interp/io/llama_scope.py
(SAE-Lens's converter; tests/io/test_interop.py compares with SAE-Lens's own loader, slow)."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from interp.io import load_dictionary, load_transcoder_set
from helpers import clear_codes
from test_hub import cached_repo

D, F = 8, 16


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def llama_folder(folder, layer=15, kind="R", norms=(2.5, 2.5), threshold=0.3, unit_decoder=False, **fields):
    """A Llama Scope folder with random weights; `kind` R/A/M are SAEs on one hook, TC a transcoder."""
    hooks = {"R": ("hook_resid_post",) * 2, "A": ("hook_attn_out",) * 2, "M": ("hook_mlp_out",) * 2,
             "TC": ("ln2.hook_normalized", "hook_mlp_out")}[kind]
    cfg = {"d_model": D, "d_sae": F, "expansion_factor": F // D, "act_fn": "jumprelu", "top_k": 4,
           "jump_relu_threshold": threshold, "norm_activation": "dataset-wise",
           "dataset_average_activation_norm": {"in": norms[0], "out": norms[1]},
           "sparsity_include_decoder_norm": unit_decoder, "apply_decoder_bias_to_pre_encoder": False,
           "use_decoder_bias": True, "hook_point_in": f"blocks.{layer}.{hooks[0]}",
           "hook_point_out": f"blocks.{layer}.{hooks[1]}", **fields}
    decoder = rand(D, F, seed=layer + 2)
    weights = {"encoder.weight": rand(F, D, seed=layer), "encoder.bias": rand(F, seed=layer + 1) * 0.2,
               "decoder.weight": decoder / decoder.norm(dim=0) if unit_decoder else decoder,
               "decoder.bias": rand(D, seed=layer + 3)}
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "hyperparams.json").write_text(json.dumps(cfg))
    save_file(weights, folder / "checkpoints" / "final.safetensors")
    return cfg, weights


def by_hand(cfg, w, x):
    """Codes and output of the folder's dictionary on raw x [n, D], written out from the module docstring."""
    norms = cfg["dataset_average_activation_norm"]
    s_in = math.sqrt(cfg["d_model"]) / norms["in"]
    s_out = math.sqrt(cfg["d_model"]) / norms["out" if cfg["hook_point_in"] != cfg["hook_point_out"] else "in"]
    pre = (s_in * x) @ w["encoder.weight"].T + w["encoder.bias"]
    codes = pre * (pre > s_in * cfg["jump_relu_threshold"])
    return codes, (codes @ w["decoder.weight"].T + w["decoder.bias"]) / s_out


def inputs(norm, n=64):
    """Activations whose norm is about the dataset average (the regime the release was trained in)."""
    return rand(n, D, seed=99) * norm / math.sqrt(D)


@pytest.mark.parametrize(("kind", "norms", "hooks"), [
    ("R", (2.5, 2.5), ("blocks.15.hook_resid_post",) * 2),
    ("A", (0.4, 0.4), ("blocks.15.hook_attn_out",) * 2),
    ("TC", (math.sqrt(D), 0.3), ("blocks.15.ln2.hook_normalized", "blocks.15.hook_mlp_out"))])
def test_dataset_norm_folded_in(kind, norms, hooks, tmp_path):
    folder = tmp_path / f"Llama3_1-8B-Base-L15{kind}-8x"
    cfg, w = llama_folder(folder, kind=kind, norms=norms, unit_decoder=kind == "A")
    d = load_dictionary(folder)
    assert (d.arch, d.cfg.subtract_b_dec, d.d_in, d.d_dict, d.d_out) == ("jumprelu", False, D, F, D)
    assert (d.cfg.hook_in, d.cfg.hook_out, d.cfg.model) == (*hooks, "meta-llama/Llama-3.1-8B")
    x = inputs(norms[0])
    codes, out = by_hand(cfg, w, x)
    assert 0.1 < (codes != 0).float().mean() < 0.9, "a vacuous gate: all or no latents fire"
    with torch.no_grad():
        clear = clear_codes(d, x, 1e-5)  # norms folded in vs applied by hand: the same gates wherever a margin allows
        assert clear.float().mean() > 0.9 and torch.equal((d.encode(x) != 0)[clear], (codes != 0)[clear])
        torch.testing.assert_close(d.encode(x), codes, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(d(x), out, rtol=1e-5, atol=1e-5 / (math.sqrt(D) / norms[1]))


def test_transcoder_output_scale_differs_from_the_input_scale(tmp_path):
    """In a transcoder the target was scaled by its own norm: reading it with s_in (SAE-Lens's SAE rule) is wrong."""
    cfg, w = llama_folder(tmp_path / "tc", kind="TC", norms=(2.0, 0.5))
    d = load_dictionary(tmp_path / "tc")
    x = inputs(2.0)
    codes, _ = by_hand(cfg, w, x)
    s_in = math.sqrt(D) / 2.0
    wrong = (codes @ w["decoder.weight"].T + w["decoder.bias"]) / s_in
    with torch.no_grad():
        assert (d(x) - wrong).abs().max() > 0.1


def test_hub_repo_id_resolves_offline_with_model_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    repo, sub = "fnlp/Llama3_1-8B-Base-LXM-8x", "Llama3_1-8B-Base-L3M-8x"
    cfg, w = llama_folder(cached_repo(tmp_path / "hub", repo) / sub, layer=3, kind="M")
    d = load_dictionary(repo, sub)
    assert (d.cfg.hook_in, d.cfg.model, d.cfg.training) == ("blocks.3.hook_mlp_out", "meta-llama/Llama-3.1-8B",
                                                             {"source": f"{repo}/{sub}"})
    x = inputs(2.5)
    with torch.no_grad():
        torch.testing.assert_close(d.encode(x), by_hand(cfg, w, x)[0], rtol=1e-5, atol=1e-5)


def test_a_release_of_transcoders_is_a_set(tmp_path):
    for layer in range(3):
        llama_folder(tmp_path / f"Llama3_1-8B-Base-L{layer}TC-8x", layer=layer, kind="TC", norms=(2.0, 0.5))
    llama_folder(tmp_path / "Llama3_1-8B-Base-L0R-8x", layer=0)  # an SAE in the same folder is skipped
    tcs = load_transcoder_set(tmp_path, n_layers=3)
    assert sorted(tcs) == [0, 1, 2] and tcs[2].cfg.hook_out == "blocks.2.hook_mlp_out"


def test_already_folded_weights_are_read_as_they_are(tmp_path):
    cfg, w = llama_folder(tmp_path / "f", norm_activation="inference", threshold=0.2)
    d = load_dictionary(tmp_path / "f")
    x = inputs(2.5)
    pre = x @ w["encoder.weight"].T + w["encoder.bias"]
    with torch.no_grad():
        torch.testing.assert_close(d.encode(x), pre * (pre > 0.2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("fields", "message"), [
    ({"act_fn": "topk"}, "act_fn is 'topk'"),
    ({"norm_activation": "token-wise"}, "norm_activation is 'token-wise'"),
    ({"dataset_average_activation_norm": {"out": 1.0}}, "dataset_average_activation_norm should hold positive"),
    ({"apply_decoder_bias_to_pre_encoder": True}, "apply_decoder_bias_to_pre_encoder is true"),
    ({"d_sae": 32}, "the config says d_dict=32 but the weights have d_dict=16"),
    ({"jump_relu_threshold": None}, "'jump_relu_threshold' should be a number")])
def test_bad_hyperparams_fail_clearly(fields, message, tmp_path):
    llama_folder(tmp_path, **fields)
    with pytest.raises(ValueError, match=message):
        load_dictionary(tmp_path)


def test_foreign_and_missing_tensors_fail_clearly(tmp_path):
    _, w = llama_folder(tmp_path)
    save_file({**w, "log_jumprelu_threshold": torch.zeros(F)}, tmp_path / "checkpoints" / "final.safetensors")
    with pytest.raises(ValueError, match=r"unexpected \['log_jumprelu_threshold'\]"):
        load_dictionary(tmp_path)
    save_file({k: v for k, v in w.items() if k != "decoder.bias"}, tmp_path / "checkpoints" / "final.safetensors")
    with pytest.raises(ValueError, match=r"missing tensors \['decoder.bias'\]"):
        load_dictionary(tmp_path)
    (tmp_path / "checkpoints" / "final.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_dictionary(tmp_path)


def test_decoder_norms_that_would_change_the_gate_warn(tmp_path):
    llama_folder(tmp_path / "a", unit_decoder=False, sparsity_include_decoder_norm=True)
    with pytest.warns(UserWarning, match="sparsity_include_decoder_norm is true but decoder norms range"):
        load_dictionary(tmp_path / "a")
