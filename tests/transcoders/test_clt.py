import dataclasses
import json

import pytest
import torch

import transcoders.clt_train as clt_train
from interp.data.activations import ActivationStore
from interp.dictionary import architecture
from interp.training.loop import TrainConfig
from interp.training.losses import reconstruction_loss
from transcoders.clt import CLTConfig, CrossLayerTranscoder, load_clt
from transcoders.clt_train import clt_hooks, exported, train_clt
from transcoders.config import transcoder_config

L, D, F = 3, 8, 16


def per_layer(arch="topk", seed=0):
    g = torch.Generator().manual_seed(seed)
    fields = {"k": 4} if arch == "topk" else {"l0_coeff": 0.1, "bandwidth": 0.5}
    out = {}
    for l in range(L):
        tc = architecture(arch)(transcoder_config(D, l, arch, d_dict=F, dtype="float64", **fields))
        with torch.no_grad():
            for p in tc.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        out[l] = tc
    return out


def random_clt(arch="topk", seed=1):
    clt = CrossLayerTranscoder.from_transcoders(per_layer(arch))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for W in clt.W_dec:
            W.copy_(torch.randn(W.shape, generator=g, dtype=W.dtype))
    return clt


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_zero_cross_layer_decoders_equal_the_per_layer_transcoders(arch):
    tcs = per_layer(arch)
    clt = CrossLayerTranscoder.from_transcoders(tcs)
    x = torch.randn(32, L, D, dtype=torch.float64)
    y = torch.randn(32, L, D, dtype=torch.float64)
    recon, sparsity, _ = clt.training_forward(x)
    loss = clt_train.clt_loss(recon, y) + sparsity
    ref = 0.0
    for l, tc in tcs.items():
        torch.testing.assert_close(clt(x)[:, l], tc(x[:, l]))
        step = tc.training_forward(x[:, l])
        torch.testing.assert_close(recon[:, l], step.recon)
        ref = ref + reconstruction_loss(step.recon, y[:, l]) + tc.sparsity_loss(step)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    for l, tc in tcs.items():  # the same gradients reach every shared parameter
        torch.testing.assert_close(clt.W_enc.grad[l], tc.W_enc.grad)
        torch.testing.assert_close(clt.b_enc.grad[l], tc.b_enc.grad)
        torch.testing.assert_close(clt.W_dec[l].grad[:, 0], tc.W_dec.grad)
        torch.testing.assert_close(clt.b_dec.grad[l], tc.b_dec.grad)


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_sparse_training_forward_equals_a_slow_reference(arch):
    clt = random_clt(arch)
    x = torch.randn(16, L, D, dtype=torch.float64)
    codes = clt.encode(x)
    slow = torch.zeros(16, L, D, dtype=torch.float64)
    for m in range(L):
        slow[:, m] = clt.b_dec[m] + sum(codes[:, l] @ clt.W_dec[l][:, m - l] for l in range(m + 1))
    torch.testing.assert_close(clt.training_forward(x)[0], slow)
    torch.testing.assert_close(clt(x), slow)
    views = clt.layer_transcoders()  # the per-layer view interp.circuits reads
    for l, tc in views.items():
        torch.testing.assert_close(tc.encode(x[:, l]), codes[:, l])
        torch.testing.assert_close(torch.cat([tc.W_dec[:, None], tc.W_dec_cross], 1), clt.W_dec[l])


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_save_load_in_circuit_tracers_layout(tmp_path, arch):
    from safetensors.torch import load_file

    clt = random_clt(arch)
    clt.save(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["clt.json", *[f"W_enc_{l}.safetensors" for l in range(L)], *[f"W_dec_{l}.safetensors" for l in range(L)]])
    enc = load_file(tmp_path / "W_enc_1.safetensors")
    assert enc["W_enc_1"].shape == (F, D) and load_file(tmp_path / "W_dec_1.safetensors")["W_dec_1"].shape == (F, L - 1, D)
    assert ("threshold_1" in enc) == (arch == "jumprelu")
    back = load_clt(tmp_path)
    x = torch.randn(8, L, D, dtype=torch.float64)
    torch.testing.assert_close(back(x), clt(x))
    bad = json.loads((tmp_path / "clt.json").read_text())
    (tmp_path / "clt.json").write_text(json.dumps({**bad, "d_dict": F + 1}))
    with pytest.raises(ValueError, match="shape"):
        load_clt(tmp_path)


def store(model, **kw):
    return ActivationStore(model, clt_hooks(model.cfg.n_layers), n_ctx=32, batch_size=128, block_contexts=16,
                           forward_batch=16, **kw)


def tiny_clt(model, **fields):
    return CrossLayerTranscoder(CLTConfig(n_layers=model.cfg.n_layers, d_model=model.cfg.d_model, d_dict=64, **{"k": 4, **fields}))


def test_training_learns_and_resume_equals_uninterrupted(tiny, tmp_path, monkeypatch):
    cfg = TrainConfig(tokens=128 * 12, lr=3e-3, warmup_steps=2, checkpoint_every=5)
    losses = []
    full = train_clt(tiny_clt(tiny), store(tiny), cfg, tmp_path / "full", log=lambda step, s: losses.append(s["mse"]))
    assert losses[-1] < 0.7 * losses[0]
    assert any(W[:, 1:].abs().sum() > 0 for W in full.W_dec[:-1])  # cross-layer decoders were learned

    real, calls = clt_train._step, []

    def crash(*a, **kw):
        calls.append(1)
        if len(calls) == 8:
            raise RuntimeError("simulated crash")
        return real(*a, **kw)

    monkeypatch.setattr(clt_train, "_step", crash)
    with pytest.raises(RuntimeError, match="simulated"):
        train_clt(tiny_clt(tiny), store(tiny), cfg, tmp_path / "cut")
    monkeypatch.setattr(clt_train, "_step", real)
    resumed = train_clt(tiny_clt(tiny), store(tiny), cfg, tmp_path / "cut", resume=True)
    for a, b in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="different dictionaries"):
        train_clt(tiny_clt(tiny, k=8), store(tiny), cfg, tmp_path / "cut", resume=True)
    # the checkpoint interval leaves the weights alone, so a changed one resumes (here: a finished run, no steps left)
    again = train_clt(tiny_clt(tiny), store(tiny), dataclasses.replace(cfg, checkpoint_every=7), tmp_path / "cut", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), again.parameters()))


def test_export_acts_on_raw_activations():
    clt = random_clt()
    s_in, s_out = [2.0, 0.5, 3.0], [4.0, 0.25, 1.5]
    scales = {**{f"x{l}": s for l, s in enumerate(s_in)}, **{f"target{l}": s for l, s in enumerate(s_out)}}
    raw = exported(clt, scales)
    x = torch.randn(8, L, D, dtype=torch.float64)
    scaled_out = clt(x * torch.tensor(s_in, dtype=x.dtype)[:, None])
    torch.testing.assert_close(raw(x), scaled_out / torch.tensor(s_out, dtype=x.dtype)[:, None])


def test_jumprelu_clt_trains(tiny, tmp_path):
    logs = []
    cfg = TrainConfig(tokens=128 * 8, lr=3e-3, warmup_steps=2, checkpoint_every=1000)
    clt = tiny_clt(tiny, arch="jumprelu", l0_coeff=1e-3, bandwidth=0.05)
    train_clt(clt, store(tiny), cfg, tmp_path, log=lambda step, s: logs.append(s))
    assert logs[-1]["mse"] < 0.8 * logs[0]["mse"] and logs[-1]["l0"] > 0


def test_a_finished_clt_folder_is_replaced_only_with_overwrite(tiny, tmp_path):
    """Saved CLT folders (clt.json + weights) count as finished runs: training into one needs overwrite=True."""
    from interp.errors import UserError

    tiny_clt(tiny).save(tmp_path / "clt")
    before = (tmp_path / "clt" / "clt.json").read_text()
    cfg = TrainConfig(tokens=128 * 2, lr=3e-3, warmup_steps=1, checkpoint_every=1000)
    with pytest.raises(UserError, match="overwrite"):
        train_clt(tiny_clt(tiny), store(tiny), cfg, tmp_path / "clt")
    assert (tmp_path / "clt" / "clt.json").read_text() == before and not (tmp_path / "clt" / "checkpoint.safetensors").exists()
    train_clt(tiny_clt(tiny), store(tiny), cfg, tmp_path / "clt", overwrite=True)
