"""circuit-tracer 0.5.0's layouts (config.yaml + layer_<L>.safetensors; CLT folders of W_enc_<l>/W_dec_<l>), with
known answers written from circuit_tracer/transcoder/single_layer_transcoder.py and cross_layer_transcoder.py
(tests/io/test_interop.py runs circuit-tracer's own loaders on the same layouts, slow)."""

import pytest
import torch
from safetensors.torch import save_file

from helpers import random_dictionary
from interp.io import load_transcoder_set
from interp.io.circuit_tracer import save_circuit_tracer_set

D, F = 8, 16


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def write_config(folder, kind="transcoder_set", files=None):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"model_kind: {kind}", "model_name: meta-llama/Llama-3.2-1B", "feature_input_hook: hook_resid_mid",
             "feature_output_hook: hook_mlp_out"]
    lines += ["transcoders:", *[f"  - {f}" for f in files]] if files else []
    (folder / "config.yaml").write_text("\n".join(lines) + "\n")


def test_jumprelu_file_with_threshold_and_skip(tmp_path):
    # SingleLayerTranscoder: encode F.linear(x, W_enc, b_enc) then JumpReLU x * (x > threshold);
    # decode codes @ W_dec + b_dec + x @ W_skip.T; W_enc and W_dec both [d_transcoder, d_model] in the file
    t = {"W_enc": rand(F, D), "W_dec": rand(F, D, seed=1), "b_enc": rand(F, seed=2), "b_dec": rand(D, seed=3),
         "W_skip": rand(D, D, seed=4), "activation_function.threshold": rand(F, seed=5).abs()}
    write_config(tmp_path)
    save_file(t, tmp_path / "layer_0.safetensors")
    tc = load_transcoder_set(tmp_path)[0]
    x = rand(64, D, seed=9)
    pre = x @ t["W_enc"].T + t["b_enc"]
    codes = pre * (pre > t["activation_function.threshold"])
    assert 0 < (codes != 0).float().mean() < 1
    assert (tc.arch, tc.cfg.skip, tc.cfg.hook_in, tc.cfg.model) == ("jumprelu", True, "blocks.0.hook_resid_mid",
                                                                     "meta-llama/Llama-3.2-1B")
    with torch.no_grad():
        torch.testing.assert_close(tc.encode(x), codes)
        torch.testing.assert_close(tc(x), codes @ t["W_dec"] + t["b_dec"] + x @ t["W_skip"].T)


def test_config_listing_files_and_layer_files_beside_it(tmp_path):
    tcs = {layer: random_dictionary("relu", d_in=D, d_dict=F, seed=layer, subtract_b_dec=False, model="m",
                                    hook_in=f"blocks.{layer}.hook_resid_mid", hook_out=f"blocks.{layer}.hook_mlp_out")
           for layer in range(2)}
    save_circuit_tracer_set(tcs, tmp_path / "release")
    write_config(tmp_path / "listed", files=[str(tmp_path / "release" / f"layer_{i}.safetensors") for i in range(2)])
    x = rand(32, D, seed=9).double()
    for folder in ("release", "listed"):
        loaded = load_transcoder_set(tmp_path / folder, n_layers=2)
        assert all(torch.equal(loaded[i](x), tcs[i](x)) for i in range(2))


def test_a_decoder_in_the_other_orientation_is_refused(tmp_path):
    write_config(tmp_path)
    save_file({"W_enc": rand(F, D), "W_dec": rand(D, F), "b_enc": rand(F), "b_dec": rand(D)}, tmp_path / "layer_0.safetensors")
    with pytest.raises(ValueError, match=r"expected W_enc \[d_transcoder, d_model\] and W_dec \[d_transcoder, d_model\]"):
        load_transcoder_set(tmp_path)


def circuit_tracer_clt(folder, n_layers=3, seed=0):
    """Files as CrossLayerTranscoder.to_safetensors writes them, and the config.yaml its hub releases carry."""
    g = torch.Generator().manual_seed(seed)
    write_config(folder, kind="cross_layer_transcoder")
    tensors = {}
    for l in range(n_layers):
        enc = {f"W_enc_{l}": torch.randn(F, D, generator=g), f"b_enc_{l}": torch.randn(F, generator=g) * 0.1,
               f"b_dec_{l}": torch.randn(D, generator=g), f"threshold_{l}": torch.rand(F, generator=g) * 0.5}
        dec = {f"W_dec_{l}": torch.randn(F, n_layers - l, D, generator=g)}
        save_file(enc, folder / f"W_enc_{l}.safetensors")
        save_file(dec, folder / f"W_dec_{l}.safetensors")
        tensors |= enc | dec
    return tensors


def test_a_circuit_tracer_clt_folder_loads_without_our_clt_json(tmp_path):
    # CrossLayerTranscoder.encode: einsum("lbd,lfd->lbf", x, W_enc) + b_enc, JumpReLU per layer;
    # decode: layer m's output sums codes_l @ W_dec_l[:, m - l] over l <= m, plus b_dec_m
    from transcoders import load_clt
    from transcoders.sets import load_transcoder_set as views

    t = circuit_tracer_clt(tmp_path / "clt")
    clt = load_clt(tmp_path / "clt")
    assert (clt.cfg.n_layers, clt.cfg.d_dict, clt.cfg.arch, clt.cfg.model) == (3, F, "jumprelu", "meta-llama/Llama-3.2-1B")
    x = rand(16, 3, D, seed=9)
    codes = []
    for l in range(3):
        pre = x[:, l] @ t[f"W_enc_{l}"].T + t[f"b_enc_{l}"]
        codes.append(pre * (pre > t[f"threshold_{l}"]))
    out = [sum(codes[l] @ t[f"W_dec_{l}"][:, m - l] for l in range(m + 1)) + t[f"b_dec_{m}"] for m in range(3)]
    with torch.no_grad():
        torch.testing.assert_close(clt.encode(x), torch.stack(codes, 1))
        torch.testing.assert_close(clt(x), torch.stack(out, 1))
    per_layer = views(tmp_path / "clt", 3)
    assert per_layer[1].cfg.hook_in == "blocks.1.hook_resid_mid" and per_layer[1].W_dec_cross.shape == (F, 1, D)
    with pytest.raises(ValueError, match=r"holds a cross-layer transcoder.*transcoders.load_clt"):
        load_transcoder_set(tmp_path / "clt")


def test_a_relu_clt_is_refused(tmp_path):
    from transcoders import load_clt

    circuit_tracer_clt(tmp_path)
    save_file({"W_enc_0": rand(F, D), "b_enc_0": rand(F), "b_dec_0": rand(D)}, tmp_path / "W_enc_0.safetensors")
    with pytest.raises(ValueError, match="a ReLU CLT"):
        load_clt(tmp_path)
