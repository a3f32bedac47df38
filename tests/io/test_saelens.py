"""SAELens folders: our dictionaries round-trip through them, hand-written SAELens files read as
SAELens would run them, and bad files fail naming what is wrong."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import random_dictionary
from interp.io.saelens import load_saelens, save_saelens

ARCHS = ["relu", "topk", "batchtopk", "jumprelu"]
D_IN, D_SAE = 8, 16
HOOK = "blocks.1.hook_resid_post"

# Field names as SAELens 6.x writes them (SAEConfig.to_dict in sae_lens/saes/sae.py, TopKSAEConfig in
# sae_lens/saes/topk_sae.py), plus the metadata keys SAELens reads (LLM_METADATA_KEYS) and our "interp".
SAELENS_FIELDS = ["d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations",
                  "reshape_activations", "metadata", "architecture"]
TOPK_FIELDS = ["k", "rescale_acts_by_decoder_norm"]
METADATA_FIELDS = ["sae_lens_version", "sae_lens_training_version", "model_name", "hook_name", "hook_head_index",
                   "prepend_bos", "context_size", "dataset_path", "interp"]
SAELENS_TENSORS = {"standard": ["W_enc", "b_enc", "W_dec", "b_dec"], "topk": ["W_enc", "b_enc", "W_dec", "b_dec"],
                   "jumprelu": ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"]}


def ours(arch, **fields):
    d = random_dictionary(arch, d_in=D_IN, d_dict=D_SAE, hook_in=HOOK, model="tiny", **fields)
    if arch == "batchtopk":
        d.threshold.fill_(0.3)
    return d


def x(n=64, seed=1):
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def weights(seed=2, **extra):
    g = torch.Generator().manual_seed(seed)
    shapes = {"W_enc": (D_IN, D_SAE), "b_enc": (D_SAE,), "W_dec": (D_SAE, D_IN), "b_dec": (D_IN,), **extra}
    return {n: torch.randn(s, generator=g, dtype=torch.float64) for n, s in shapes.items()}


def write(folder, cfg, tensors):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "sae_weights.safetensors")
    return folder


def cfg6(architecture="standard", **top):
    meta = {"sae_lens_version": "6.21.0", "sae_lens_training_version": "6.21.0", "model_name": "gpt2",
            "hook_name": HOOK, "hook_head_index": None, "prepend_bos": True, "context_size": 128,
            "dataset_path": "some/dataset", "model_class_name": "HookedTransformer"}
    return {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float64", "device": "cpu", "apply_b_dec_to_input": True,
            "normalize_activations": "none", "reshape_activations": "none", "metadata": meta,
            "architecture": architecture, **top}


def saelens_encode(w, x, apply_b_dec=True, gate=torch.relu):
    """SAELens's encode: process_sae_in subtracts b_dec * apply_b_dec_to_input, then act(x W_enc + b_enc)."""
    return gate((x - w["b_dec"] * apply_b_dec) @ w["W_enc"] + w["b_enc"])


# --- round trips -------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_keeps_encode_decode_and_config(arch, tmp_path):
    d = ours(arch, training={"source": "shakespeare", "n_ctx": 64})
    loaded = load_saelens(save_saelens(d, tmp_path / arch))
    assert type(loaded) is type(d)
    assert loaded.cfg == d.cfg
    inputs = x()
    with torch.no_grad():
        assert torch.allclose(loaded.encode(inputs), d.encode(inputs))
        assert torch.allclose(loaded(inputs), d(inputs))
        codes = d.encode(inputs)
        assert torch.allclose(loaded.decode(codes), d.decode(codes))


def test_round_trip_without_b_dec_subtraction(tmp_path):
    d = ours("relu", subtract_b_dec=False)
    loaded = load_saelens(save_saelens(d, tmp_path))
    assert json.loads((tmp_path / "cfg.json").read_text())["apply_b_dec_to_input"] is False
    assert torch.allclose(loaded(x()), d(x()))


# --- what we write -----------------------------------------------------------
@pytest.mark.parametrize(("arch", "theirs"), [("relu", "standard"), ("topk", "topk"), ("jumprelu", "jumprelu"),
                                              ("batchtopk", "jumprelu")])
def test_written_files_use_saelens_names(arch, theirs, tmp_path):
    d = ours(arch, training={"source": "shakespeare", "n_ctx": 64})
    save_saelens(d, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    expected = SAELENS_FIELDS[:-1] + (TOPK_FIELDS if theirs == "topk" else []) + SAELENS_FIELDS[-1:]
    assert list(cfg) == expected
    assert sorted(cfg["metadata"]) == sorted(METADATA_FIELDS)
    assert cfg["architecture"] == theirs and (cfg["d_in"], cfg["d_sae"]) == (D_IN, D_SAE)
    assert cfg["metadata"]["hook_name"] == HOOK and cfg["metadata"]["model_name"] == "tiny"
    assert cfg["metadata"]["dataset_path"] == "shakespeare" and cfg["metadata"]["context_size"] == 64
    assert cfg["metadata"]["sae_lens_version"] >= "6.0.0"  # SAELens treats older or missing as the flat layout
    tensors = load_file(tmp_path / "sae_weights.safetensors")
    assert sorted(tensors) == sorted(SAELENS_TENSORS[theirs])
    assert tensors["W_enc"].shape == (D_IN, D_SAE) and tensors["W_dec"].shape == (D_SAE, D_IN)
    if theirs == "jumprelu":
        assert tensors["threshold"].shape == (D_SAE,)
        assert torch.allclose(tensors["threshold"], d.threshold.expand(D_SAE))
    if theirs == "topk":
        assert cfg["k"] == 4 and cfg["rescale_acts_by_decoder_norm"] is False


TRANSCODER_CASES = [("relu", {}, "transcoder"), ("relu", {"skip": True}, "skip_transcoder"),
                    ("jumprelu", {}, "jumprelu_transcoder"), ("jumprelu", {"skip": True}, "jumprelu_skip_transcoder"),
                    ("batchtopk", {}, "jumprelu_transcoder")]


@pytest.mark.parametrize(("arch", "extra", "theirs"), TRANSCODER_CASES)
def test_transcoder_round_trip(arch, extra, theirs, tmp_path):
    d = ours(arch, d_out=6, hook_out="blocks.1.hook_mlp_out", subtract_b_dec=False, **extra)
    loaded = load_saelens(save_saelens(d, tmp_path))
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == theirs and cfg["d_out"] == 6 and cfg["apply_b_dec_to_input"] is False
    assert cfg["metadata"]["hook_name"] == HOOK and cfg["metadata"]["hook_name_out"] == "blocks.1.hook_mlp_out"
    if extra.get("skip"):
        assert load_file(tmp_path / "sae_weights.safetensors")["W_skip"].shape == (6, D_IN)  # SAELens: x @ W_skip.T
    assert type(loaded) is type(d) and loaded.cfg == d.cfg
    with torch.no_grad():
        assert torch.equal(loaded.encode(x()), d.encode(x())) and torch.equal(loaded(x()), d(x()))


def test_transcoders_that_saelens_cannot_express_are_refused(tmp_path):
    with pytest.raises(ValueError, match="subtract_b_dec=True"):
        save_saelens(random_dictionary("relu", d_in=8, d_dict=16, d_out=6), tmp_path)
    with pytest.raises(ValueError, match="no transcoder layout for architecture .topk."):
        save_saelens(ours("topk", skip=True, subtract_b_dec=False, hook_out="blocks.1.hook_mlp_out"), tmp_path)


def test_reads_saelens_gated_as_jumprelu(tmp_path):
    w = weights(b_gate=(D_SAE,), b_mag=(D_SAE,), r_mag=(D_SAE,))
    del w["b_enc"]
    d = load_saelens(write(tmp_path, cfg6("gated"), w))
    sae_in = x() - w["b_dec"]  # SAELens GatedSAE.encode
    gate = (sae_in @ w["W_enc"] + w["b_gate"]) > 0
    mag = torch.relu(sae_in @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"])
    assert d.arch == "jumprelu"
    assert torch.allclose(d.encode(x()), gate * mag, atol=1e-12)
    assert (gate * mag > 0).any() and ((gate * mag) == 0).any()


# --- reading hand-written SAELens folders -----------------------------------
def test_reads_saelens_6_standard(tmp_path):
    w = weights()
    d = load_saelens(write(tmp_path, cfg6("standard"), w))
    assert d.arch == "relu" and d.cfg.hook_in == HOOK and d.cfg.model == "gpt2"
    assert d.cfg.training == {"source": "some/dataset", "n_ctx": 128}
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(d, name).detach(), w[name])
    assert torch.allclose(d.encode(x()), saelens_encode(w, x()))


def test_reads_saelens_6_jumprelu_with_nonpositive_thresholds(tmp_path):
    w = weights(threshold=(D_SAE,))
    w["threshold"] = w["threshold"].abs()
    w["threshold"][:3] = torch.tensor([0.0, -0.5, -2.0], dtype=torch.float64)  # SAELens gates at threshold.relu()
    w["b_enc"][:3] = 1e-6  # on a zero input these latents fire just above SAELens's effective threshold 0
    d = load_saelens(write(tmp_path, cfg6("jumprelu", apply_b_dec_to_input=False), w))
    assert d.arch == "jumprelu" and d.cfg.subtract_b_dec is False
    inputs = torch.cat([x(), torch.zeros(1, D_IN, dtype=torch.float64)])
    pre = inputs @ w["W_enc"] + w["b_enc"]
    expected = torch.relu(pre) * (pre > w["threshold"].relu())
    assert torch.equal(expected[-1, :3] > 0, torch.ones(3, dtype=torch.bool))
    assert torch.allclose(d.encode(inputs), expected)


def test_reads_saelens_6_topk_rescaled_by_decoder_norm(tmp_path):
    w = weights()
    w["W_dec"][5] *= 7.0
    d = load_saelens(write(tmp_path, cfg6("topk", k=3, rescale_acts_by_decoder_norm=True), w))
    norms = w["W_dec"].norm(dim=-1)
    pre = saelens_encode(w, x(), gate=lambda p: p) * norms  # SAELens TopKSAE.encode / decode with the flag on
    top = pre.topk(3, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    recon = (acts / norms) @ w["W_dec"] + w["b_dec"]
    assert d.cfg.k == 3
    assert torch.allclose(d.encode(x()), acts) and torch.allclose(d(x()), recon)


def test_reads_saelens_batchtopk_training_checkpoint(tmp_path):
    w = weights(topk_threshold=())
    w["topk_threshold"] = torch.tensor(0.25, dtype=torch.float64)
    d = load_saelens(write(tmp_path, cfg6("batchtopk", k=4.0, rescale_acts_by_decoder_norm=False), w))
    assert d.arch == "batchtopk" and d.cfg.k == 4 and float(d.threshold) == 0.25
    assert torch.allclose(d.encode(x()), saelens_encode(w, x(), gate=lambda p: p * (p > 0.25)))


def test_reads_pre_6_flat_layout(tmp_path):
    w = weights(scaling_factor=(D_SAE,))
    w["scaling_factor"] = torch.ones(D_SAE, dtype=torch.float64)  # SAELens 3-5 wrote ones here
    flat = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "dtype": "torch.float64", "device": "cuda",
            "model_name": "gpt2-small", "hook_name": HOOK, "hook_layer": 1, "hook_head_index": None,
            "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 5}, "apply_b_dec_to_input": False,
            "finetuning_scaling_factor": False, "sae_lens_training_version": "4.4.5", "prepend_bos": True,
            "dataset_path": "roneneldan/TinyStories", "context_size": 256, "normalize_activations": False,
            "neuronpedia_id": None, "l1_coefficient": 4}
    d = load_saelens(write(tmp_path, flat, w))
    assert d.arch == "topk" and d.cfg.k == 5 and d.cfg.hook_in == HOOK and d.cfg.model == "gpt2-small"
    assert d.cfg.subtract_b_dec is False and d.cfg.dtype == "float64"
    assert torch.equal(d.W_dec.detach(), w["W_dec"])


def test_flat_layout_finetuning_scaling_factor_is_folded(tmp_path):
    w = weights(scaling_factor=(D_SAE,))
    flat = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float64", "hook_point": HOOK, "model_name": "gpt2-small",
            "finetuning_scaling_factor": True}
    d = load_saelens(write(tmp_path, flat, w))
    assert d.arch == "relu" and d.cfg.hook_in == HOOK and d.cfg.subtract_b_dec is True
    codes = saelens_encode(w, x())
    assert torch.allclose(d(x()), (codes * w["scaling_factor"]) @ w["W_dec"] + w["b_dec"])


def test_expected_average_only_in_folds_a_given_factor(tmp_path):
    w = weights()
    folder = write(tmp_path, cfg6("standard", normalize_activations="expected_average_only_in"), w)
    d = load_saelens(folder, norm_scaling_factor=2.5)
    recon = saelens_encode(w, 2.5 * x()) @ w["W_dec"] + w["b_dec"]  # SAELens runs on x * factor ...
    assert torch.allclose(d(x()), recon / 2.5)  # ... and its output is in scaled units


# --- bad files -----------------------------------------------------------------
@pytest.mark.parametrize(("change", "match"), [
    (lambda c: c.pop("d_sae"), "missing field 'd_sae'"),
    (lambda c: c.pop("architecture"), "missing field 'architecture'"),
    (lambda c: c.update(architecture="matryoshka_batchtopk_x"), "'architecture' is 'matryoshka_batchtopk_x'"),
    (lambda c: c.update(d_in="8"), "'d_in' should be int"),
    (lambda c: c.update(architecture="topk"), "missing field 'k'"),
    (lambda c: c.update(architecture="topk", k=2.5), "'k' is 2.5"),
    (lambda c: c.update(normalize_activations="expected_average_only_in"), "normalize_activations"),
    (lambda c: c.update(normalize_activations="layer_norm"), "normalize_activations"),
    (lambda c: c.update(reshape_activations="hook_z"), "reshape_activations"),
    (lambda c: c["metadata"].update(hook_head_index=3), "hook_head_index"),
    (lambda c: c.update(dtype="int8"), "dtype"),
])
def test_bad_config_fails_naming_the_field(change, match, tmp_path):
    cfg = cfg6("standard")
    change(cfg)
    with pytest.raises(ValueError, match=match):
        load_saelens(write(tmp_path, cfg, weights()))


def test_wrong_shape_fails(tmp_path):
    w = weights()
    w["W_enc"] = w["W_enc"][:, :10]
    with pytest.raises(ValueError, match=r"W_enc has shape \(8, 10\)"):
        load_saelens(write(tmp_path, cfg6("standard"), w))


def test_missing_threshold_fails(tmp_path):
    with pytest.raises(ValueError, match=r"missing \['threshold'\]"):
        load_saelens(write(tmp_path, cfg6("jumprelu"), weights()))


def test_truncated_weights_fail(tmp_path):
    save_saelens(ours("relu"), tmp_path)
    path = tmp_path / "sae_weights.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_saelens(tmp_path)


def test_missing_files_fail(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_saelens(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg6("standard")))
    with pytest.raises(FileNotFoundError, match="sae_weights.safetensors"):
        load_saelens(tmp_path)


def test_factor_without_normalisation_is_refused(tmp_path):
    with pytest.raises(ValueError, match="norm_scaling_factor"):
        load_saelens(write(tmp_path, cfg6("standard"), weights()), norm_scaling_factor=2.0)


def test_batchtopk_needs_one_threshold(tmp_path):
    save_saelens(ours("batchtopk"), tmp_path)
    path = tmp_path / "sae_weights.safetensors"
    tensors = load_file(path)
    tensors["threshold"][0] += 1.0
    save_file(tensors, path)
    with pytest.raises(ValueError, match="threshold differs across latents"):
        load_saelens(tmp_path)


def test_load_dictionary_reads_saelens_folders(tmp_path):
    from interp import load_dictionary

    d = random_dictionary("topk")
    save_saelens(d, tmp_path)
    x = torch.randn(5, 8, dtype=torch.float64)
    assert torch.allclose(load_dictionary(tmp_path)(x), d(x))
