"""load_dictionary on every format, against forwards written from each source library's own code.

Fixtures follow the published layouts; each test names the reference it follows. sparsify and SAELens
are also compared with the libraries themselves in tests/io/test_interop.py (slow)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from helpers import random_dictionary
from interp.io import FORMATS, load_dictionary, load_transcoder_set
from interp.io.circuit_tracer import save_circuit_tracer_set
from interp.io.saelens import save_saelens

D, F, D_OUT = 8, 16, 6


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed + sum(shape)), dtype=torch.float64)


def x(n=64):
    return rand(n, D, seed=99)


def jumprelu(pre, threshold):  # Gemma Scope / SAELens / circuit-tracer: relu(pre) * (pre > threshold)
    return torch.relu(pre) * (pre > threshold)


# --- ours and SAELens through the one entry point ---------------------------------------------------------
def test_our_format_and_saelens_are_detected(tmp_path):
    d = random_dictionary("topk", hook_in="blocks.0.hook_resid_post")
    d.save(tmp_path / "ours")
    save_saelens(d, tmp_path / "theirs")
    for name in ("ours", "theirs"):
        loaded = load_dictionary(tmp_path / name)
        assert loaded.cfg == d.cfg and torch.equal(loaded(x()), d(x()))


def test_dtype_and_overrides(tmp_path):
    random_dictionary("relu").save(tmp_path)
    d = load_dictionary(tmp_path, dtype=torch.float32, hook_in="blocks.1.hook_resid_pre", model="gpt2")
    assert d.W_enc.dtype == torch.float32 and d.cfg.dtype == "float32"
    assert (d.cfg.hook_in, d.cfg.hook_out, d.cfg.model) == ("blocks.1.hook_resid_pre",) * 2 + ("gpt2",)


def test_unknown_folder_and_format_fail_clearly(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"no known dictionary format \(found \['notes.txt'\]\)"):
        load_dictionary(tmp_path)
    with pytest.raises(ValueError, match="Unknown dictionary format 'onnx'"):
        load_dictionary(tmp_path, format="onnx")
    with pytest.raises(FileNotFoundError, match="neither a local file or folder nor a hub repo id"):
        load_dictionary(tmp_path / "missing" / "deeper")
    assert FORMATS[0] == "interp"


# --- Gemma Scope ----------------------------------------------------------------------------------------
def gemma_params(d_out=D):
    """Keys and shapes of google/gemma-scope-2b-pt-res layer_*/width_*/average_l0_*/params.npz."""
    p = {"W_enc": rand(D, F), "W_dec": rand(F, d_out, seed=1), "b_enc": rand(F, seed=2), "b_dec": rand(d_out, seed=3),
         "threshold": rand(F, seed=4).abs()}
    return {k: v.float().numpy() for k, v in p.items()}


@pytest.mark.parametrize(("repo", "hooks", "d_out"), [
    ("gemma-scope-2b-pt-res", ("blocks.20.hook_resid_post",) * 2, D),
    ("gemma-scope-9b-it-mlp", ("blocks.20.hook_mlp_out",) * 2, D),
    ("gemma-scope-2b-pt-transcoders", ("blocks.20.ln2.hook_normalized", "blocks.20.hook_mlp_out"), D_OUT)])
def test_gemma_scope_npz(repo, hooks, d_out, tmp_path):
    folder = tmp_path / repo / "layer_20" / "width_16k" / "average_l0_71"
    folder.mkdir(parents=True)
    p = gemma_params(d_out)
    np.savez(folder / "params.npz", **p)
    d = load_dictionary(folder)
    t = {k: torch.from_numpy(v) for k, v in p.items()}
    xs = x().float()
    codes = jumprelu(xs @ t["W_enc"] + t["b_enc"], t["threshold"])  # the Gemma Scope tutorial's JumpReLUSAE
    assert (d.cfg.hook_in, d.cfg.hook_out) == hooks and d.cfg.model.startswith("gemma-2-")
    assert d.arch == "jumprelu" and not d.cfg.subtract_b_dec and d.d_out == d_out
    assert torch.equal(d.encode(xs) > 0, codes > 0)
    torch.testing.assert_close(d.encode(xs), codes, rtol=0, atol=1e-6)
    torch.testing.assert_close(d(xs), codes @ t["W_dec"] + t["b_dec"], rtol=0, atol=1e-5)


def test_gemma_scope_pickled_npz_is_refused(tmp_path):
    p = gemma_params()
    p["W_enc"] = np.array([{"W_enc": 1}], dtype=object)  # np.savez pickles object arrays
    np.savez(tmp_path / "params.npz", **p)
    with pytest.raises(ValueError, match="not a readable .npz of arrays"):
        load_dictionary(tmp_path)


def test_gemma_scope_missing_array_is_named(tmp_path):
    p = gemma_params()
    del p["threshold"]
    np.savez(tmp_path / "params.npz", **p)
    with pytest.raises(ValueError, match=r"missing arrays \['threshold'\]"):
        load_dictionary(tmp_path, format="gemma_scope")


def test_gemma_scope_extra_array_is_refused_not_dropped(tmp_path):
    p = {**gemma_params(), "affine_skip_connection": np.zeros((D, D), "float32")}  # a skip path read as none would misread
    np.savez(tmp_path / "params.npz", **p)
    with pytest.raises(ValueError, match=r"unexpected \['affine_skip_connection'\]"):
        load_dictionary(tmp_path)


# --- dictionary_learning ------------------------------------------------------------------------------------
def dl_folder(tmp_path, state, dict_class, **trainer):
    """ae.pt + config.json as dictionary_learning's training loop writes them (dictionary_learning/training.py)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp_path / "ae.pt")
    cfg = {"trainer": {"dict_class": dict_class, "activation_dim": D, "dict_size": F, "layer": 3,
                       "lm_name": "EleutherAI/pythia-70m-deduped", "submodule_name": "resid_post_layer_3", **trainer},
           "buffer": {"d_submodule": D, "ctx_len": 128}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_dictionary_learning_autoencoder(tmp_path):
    # AutoEncoder in dictionary_learning/dictionary.py: relu(encoder(x - bias)), decoder(f) + bias
    s = {"bias": rand(D), "encoder.weight": rand(F, D), "encoder.bias": rand(F, seed=5), "decoder.weight": rand(D, F, seed=6)}
    d = load_dictionary(dl_folder(tmp_path, s, "AutoEncoder"))
    f = torch.relu((x() - s["bias"]) @ s["encoder.weight"].T + s["encoder.bias"])
    assert d.cfg.hook_in == "blocks.3.hook_resid_post" and d.cfg.model == "EleutherAI/pythia-70m-deduped"
    assert torch.allclose(d.encode(x()), f) and torch.allclose(d(x()), f @ s["decoder.weight"].T + s["bias"])


def test_dictionary_learning_gated_folds_exactly(tmp_path):
    # GatedAutoEncoder.encode: x_enc = encoder(x - decoder_bias); (x_enc + gate_bias > 0) * relu(exp(r_mag) x_enc + mag_bias)
    s = {"decoder_bias": rand(D), "encoder.weight": rand(F, D), "r_mag": rand(F, seed=7) * 0.3,
         "gate_bias": rand(F, seed=8), "mag_bias": rand(F, seed=9), "decoder.weight": rand(D, F, seed=6)}
    d = load_dictionary(dl_folder(tmp_path, s, "GatedAutoEncoder"))
    x_enc = (x() - s["decoder_bias"]) @ s["encoder.weight"].T
    f = (x_enc + s["gate_bias"] > 0) * torch.relu(s["r_mag"].exp() * x_enc + s["mag_bias"])
    assert d.arch == "jumprelu" and (f > 0).float().mean() > 0.1
    assert torch.allclose(d.encode(x()), f, atol=1e-12)
    assert torch.allclose(d(x()), f @ s["decoder.weight"].T + s["decoder_bias"], atol=1e-12)


@pytest.mark.parametrize("dict_class", ["AutoEncoderTopK", "BatchTopKSAE"])
def test_dictionary_learning_topk_and_batchtopk(dict_class, tmp_path):
    # trainers/top_k.py AutoEncoderTopK.encode (top k of relu(encoder(x - b_dec))) and trainers/batch_top_k.py
    # BatchTopKSAE.encode(use_threshold=True): relu(pre) * (relu(pre) > threshold)
    s = {"k": torch.tensor(3, dtype=torch.int), "threshold": torch.tensor(0.7), "decoder.weight": rand(D, F, seed=6),
         "encoder.weight": rand(F, D), "encoder.bias": rand(F, seed=5), "b_dec": rand(D, seed=3)}
    d = load_dictionary(dl_folder(tmp_path, s, dict_class, k=3))
    post = torch.relu((x() - s["b_dec"]) @ s["encoder.weight"].T + s["encoder.bias"])
    if dict_class == "AutoEncoderTopK":
        top = post.topk(3, dim=-1)
        f = torch.zeros_like(post).scatter(-1, top.indices, top.values)
    else:
        f = post * (post > 0.7)
    assert d.arch == {"AutoEncoderTopK": "topk", "BatchTopKSAE": "batchtopk"}[dict_class] and d.cfg.k == 3
    assert torch.allclose(d.encode(x()), f)


def test_dictionary_learning_jumprelu(tmp_path):
    # JumpReluAutoEncoder.encode (apply_b_dec_to_input False): relu(pre * (pre > threshold))
    s = {"W_enc": rand(D, F), "b_enc": rand(F, seed=5), "W_dec": rand(F, D, seed=6), "b_dec": rand(D, seed=3),
         "threshold": rand(F, seed=4).abs()}
    d = load_dictionary(dl_folder(tmp_path, s, "JumpReluAutoEncoder"))
    pre = x() @ s["W_enc"] + s["b_enc"]
    assert torch.allclose(d.encode(x()), torch.relu(pre * (pre > s["threshold"])))


def test_dictionary_learning_pickle_is_refused(tmp_path):
    torch.save(torch.nn.Linear(D, F), tmp_path / "ae.pt")  # a whole module: needs arbitrary unpickling
    with pytest.raises(ValueError, match="weights_only=True"):
        load_dictionary(tmp_path)


def test_dictionary_learning_topk_without_config_is_ambiguous(tmp_path):
    s = {"k": torch.tensor(3), "threshold": torch.tensor(0.1), "decoder.weight": rand(D, F), "encoder.weight": rand(F, D),
         "encoder.bias": rand(F), "b_dec": rand(D)}
    torch.save(s, tmp_path / "ae.pt")
    with pytest.raises(ValueError, match="dict_class"):
        load_dictionary(tmp_path)


def test_config_shapes_disagreeing_with_tensors_fail(tmp_path):
    s = {"bias": rand(D), "encoder.weight": rand(F, D), "encoder.bias": rand(F), "decoder.weight": rand(D, F)}
    with pytest.raises(ValueError, match="config says d_dict=32 but the weights have d_dict=16"):
        load_dictionary(dl_folder(tmp_path, s, "AutoEncoder", dict_size=32))


# --- sparsify (hand-written; the library itself in test_interop.py) ---------------------------------------------
def sparsify_folder(folder, transcode=False, skip=False, k=3, **cfg):
    """cfg.json + sae.safetensors as sparsify's SparseCoder.save_to_disk writes them."""
    folder.mkdir(parents=True)
    t = {"encoder.weight": rand(F, D), "encoder.bias": rand(F, seed=5), "W_dec": rand(F, D, seed=6), "b_dec": rand(D, seed=3)}
    if skip:
        t["W_skip"] = rand(D, D, seed=11)
    save_file({n: v.float() for n, v in t.items()}, folder / "sae.safetensors")
    (folder / "cfg.json").write_text(json.dumps({"activation": "topk", "expansion_factor": 32, "normalize_decoder": True,
                                                 "num_latents": F, "k": k, "multi_topk": False, "skip_connection": skip,
                                                 "transcode": transcode, "d_in": D, **cfg}))
    return {n: v.float() for n, v in t.items()}


def test_sparsify_release_and_hookpoints(tmp_path):
    t = sparsify_folder(tmp_path / "layers.1.mlp", transcode=True, skip=True)
    sparsify_folder(tmp_path / "layers.0.mlp", transcode=True)
    d = load_dictionary(tmp_path / "layers.1.mlp")
    xs = x().float()
    pre = torch.relu(xs @ t["encoder.weight"].T + t["encoder.bias"])  # fused_encoder: relu then top k
    top = pre.topk(3, dim=-1)
    out = top.values[:, :, None].mul(t["W_dec"][top.indices]).sum(1) + t["b_dec"] + xs @ t["W_skip"].mT
    assert (d.cfg.hook_in, d.cfg.hook_out) == ("blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out")
    assert d.cfg.skip and not d.cfg.subtract_b_dec
    torch.testing.assert_close(d(xs), out, rtol=0, atol=1e-5)
    tcs = load_transcoder_set(tmp_path, n_layers=2)
    assert sorted(tcs) == [0, 1] and not tcs[0].cfg.skip


def test_sparsify_groupmax_is_refused(tmp_path):
    sparsify_folder(tmp_path / "layers.2", activation="groupmax")
    with pytest.raises(ValueError, match="'activation' is 'groupmax'"):
        load_dictionary(tmp_path / "layers.2")


# --- circuit-tracer sets -------------------------------------------------------------------------------------------
def test_circuit_tracer_set_round_trip(tmp_path):
    tcs = {layer: random_dictionary("relu", d_in=D, d_dict=F, seed=layer, subtract_b_dec=False,
                                    hook_in=f"blocks.{layer}.ln2.hook_normalized", hook_out=f"blocks.{layer}.hook_mlp_out",
                                    model="tiny", skip=layer == 1) for layer in (0, 1)}
    save_circuit_tracer_set(tcs, tmp_path / "set")
    text = (tmp_path / "set" / "config.yaml").read_text()
    assert 'feature_input_hook: "ln2.hook_normalized"' in text and 'feature_output_hook: "hook_mlp_out"' in text
    assert 'model_kind: "transcoder_set"' in text
    loaded = load_transcoder_set(tmp_path / "set", n_layers=2)
    for layer, tc in tcs.items():
        assert loaded[layer].cfg.hook_in == tc.cfg.hook_in and loaded[layer].cfg.skip == tc.cfg.skip
        assert torch.equal(loaded[layer](x()), tc(x()))


def test_circuit_tracer_legacy_relu_file_layout(tmp_path):
    # before 0.5 (commit d797c82), single_layer_transcoder.py load_relu_transcoder: W_enc [d_sae, d_model] and
    # W_dec [d_model, d_sae] are transposed on load; forward = relu(x W_enc + b_enc) W_dec + b_dec + x @ W_skip.T
    t = {"W_enc": rand(F, D), "W_dec": rand(D, F, seed=1), "b_enc": rand(F, seed=2), "b_dec": rand(D, seed=3),
         "W_skip": rand(D, D, seed=4)}
    save_file(t, tmp_path / "layer_0.safetensors")
    (tmp_path / "llama.yaml").write_text('model_name: "meta-llama/Llama-3.2-1B"\nfeature_input_hook: "hook_resid_mid"\n'
                                         "feature_output_hook: 'mlp.hook_out'\ntranscoders:\n  - id: \"a-0\"\n    layer: 0\n"
                                         '    filepath: "layer_0.safetensors"\n')
    tc = load_transcoder_set(tmp_path / "llama.yaml")[0]
    expected = torch.relu(x() @ t["W_enc"].T + t["b_enc"]) @ t["W_dec"].T + t["b_dec"] + x() @ t["W_skip"].T
    assert (tc.cfg.hook_in, tc.cfg.hook_out, tc.cfg.model) == ("blocks.0.hook_resid_mid", "blocks.0.mlp.hook_out",
                                                               "meta-llama/Llama-3.2-1B")
    assert torch.allclose(tc(x()), expected)


def test_circuit_tracer_refuses_other_architectures(tmp_path):
    with pytest.raises(ValueError, match="ReLU"):
        save_circuit_tracer_set({0: random_dictionary("topk", hook_in="blocks.0.ln2.hook_normalized",
                                                       hook_out="blocks.0.hook_mlp_out", subtract_b_dec=False)}, tmp_path)


# --- bad files -------------------------------------------------------------------------------------------------------
def test_truncated_and_foreign_files_fail(tmp_path):
    random_dictionary("relu").save(tmp_path / "a")
    w = tmp_path / "a" / "sae.safetensors"
    w.write_bytes(w.read_bytes()[:50])
    with pytest.raises(ValueError, match="truncated or foreign"):
        load_dictionary(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "ae.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_dictionary(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "params.npz").write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_dictionary(tmp_path / "c")


def test_sparsify_config_disagreeing_with_tensors_fails(tmp_path):
    sparsify_folder(tmp_path / "layers.3", num_latents=2 * F)
    with pytest.raises(ValueError, match="config says d_dict=32 but the weights have d_dict=16"):
        load_dictionary(tmp_path / "layers.3")
    sparsify_folder(tmp_path / "layers.4", skip=False, skip_connection=True)
    with pytest.raises(ValueError, match=r"do not match cfg.json \(expected .*W_skip"):
        load_dictionary(tmp_path / "layers.4")


def test_transcoders_sets_alias_keeps_its_positional_signature(tmp_path):
    """transcoders.sets.load_transcoder_set(folder, n_layers, device) delegates to interp.io's."""
    from transcoders.sets import load_transcoder_set as legacy

    for layer in range(2):
        random_dictionary("relu", seed=layer, subtract_b_dec=False, hook_in=f"blocks.{layer}.ln2.hook_normalized",
                          hook_out=f"blocks.{layer}.hook_mlp_out").save(tmp_path / f"layer_{layer}")
    random_dictionary("topk", hook_in="blocks.0.hook_resid_post").save(tmp_path / "sae")  # an SAE beside them: skipped
    old, new = legacy(tmp_path, 2, "cpu", dtype="float32"), load_transcoder_set(tmp_path, n_layers=2)
    assert sorted(old) == sorted(new) == [0, 1] and old[1].W_enc.dtype == torch.float32
    assert torch.equal(old[1].W_enc, new[1].W_enc.float())
    with pytest.raises(ValueError, match=r"no transcoder for layers \[2\]"):
        legacy(tmp_path, 3)
