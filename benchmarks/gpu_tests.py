"""The CUDA path against the CPU/torch path, run by gpu_check.sh (`pytest benchmarks/gpu_tests.py`).

    Triton decode and its backward against the torch decode, single and stacked
    the stacked TopK kernels against each member alone, on the device
    bf16 autocast on the device against fp32
    train() of a TopK SAE on the device against the same run on CPU

The device is $GPU_CHECK_DEVICE (default: cuda when torch sees one, else cpu). On CPU
the Triton rows run under TRITON_INTERPRET=1 when set, else they are skipped, so the
file also runs in gpu_check.sh's CPU dry run.
"""

import os

import pytest
import torch

from interp.kernels import sparse_decode, topk_encode, triton_available, triton_interpreting

DEVICE = torch.device(os.environ.get("GPU_CHECK_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
TRITON = triton_available() and (DEVICE.type == "cuda" or triton_interpreting())


def make(n, d_in, d_dict, d_out, dtype=torch.float32, seed=0, members=None):
    """x [(E,) n, d_in], W_enc [(E,) d_in, d_dict], b_enc [(E,) d_dict], W_dec [(E,) d_dict, d_out], made on CPU."""
    g = torch.Generator().manual_seed(seed)
    lead = () if members is None else (members,)
    shapes = [(*lead, n, d_in), (*lead, d_in, d_dict), (*lead, d_dict), (*lead, d_dict, d_out)]
    return [torch.randn(s, generator=g, dtype=dtype) / (s[-2] ** 0.5 if len(s) > 1 + len(lead) else 10) for s in shapes]


def on(device, tensors):
    return [t.detach().to(device).requires_grad_() for t in tensors]


@pytest.mark.skipif(not TRITON, reason="Triton runs on CUDA, or on CPU under TRITON_INTERPRET=1")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("members", [None, 3])
@pytest.mark.parametrize("n,k,d_dict,d_out", [(4096, 32, 4608, 576), (333, 7, 1000, 130)])
def test_triton_decode_and_backward_match_torch(dtype, members, n, k, d_dict, d_out):
    if DEVICE.type == "cpu":  # the interpreter is slow: small shapes only
        n, d_dict, d_out = min(n, 64), min(d_dict, 256), min(d_out, 64)
    x, W_enc, b_enc, W_dec = on(DEVICE, make(n, 64, d_dict, d_out, members=members))
    values, indices = topk_encode(x, W_enc, b_enc, k if members is None else [k - 2, k, k - 1][:members])
    values = values.detach().to(dtype).requires_grad_()
    W_dec = W_dec.detach().to(dtype).requires_grad_()
    grad_out = torch.randn(*values.shape[:-1], d_out, device=DEVICE, dtype=dtype)
    got = {}
    for backend in ("torch", "triton"):
        out = sparse_decode(values, indices, W_dec, backend=backend)
        got[backend] = (out, *torch.autograd.grad(out, [values, W_dec], grad_out))
    tol = {} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    for name, a, b in zip(["out", "grad values", "grad W_dec"], got["triton"], got["torch"]):
        torch.testing.assert_close(a.float(), b.float(), **tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("ks", [(32, 32, 32, 32), (16, 24, 32, 48)])
def test_stack_equals_members_on_device(ks):
    """E stacked dictionaries give each member's codes, outputs and gradients, on the device."""
    E, n = len(ks), 512
    stacked = on(DEVICE, make(n, 64, 512, 64, members=E))
    values, indices = topk_encode(*stacked[:3], list(ks))
    out = sparse_decode(values, indices, stacked[3])
    target = torch.randn(out.shape, device=DEVICE)
    got = torch.autograd.grad(((out - target) ** 2).sum(), stacked)
    for e, k in enumerate(ks):
        member = on(DEVICE, [t[e] for t in stacked])
        v, i = topk_encode(*member[:3], k)
        o = sparse_decode(v, i, member[3])
        torch.testing.assert_close(out[e], o, rtol=1e-4, atol=1e-4)
        want = torch.autograd.grad(((o - target[e]) ** 2).sum(), member)
        for name, a, b in zip(["x", "W_enc", "b_enc", "W_dec"], got, want):
            torch.testing.assert_close(a[e], b, rtol=1e-3, atol=1e-3, msg=lambda m: f"member {e} grad {name}: {m}")


def test_bf16_autocast_close_to_fp32_on_device():
    """Under bf16 autocast, on the latents it selects, the output and gradients match fp32 within bf16 rounding."""
    from interp.kernels.dense import dense_decode, dense_topk_encode

    params = on(DEVICE, make(1024, 64, 512, 64))
    x, W_enc, b_enc, W_dec = params
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        values, indices = topk_encode(x, W_enc, b_enc, 16)
        out = sparse_decode(values, indices, W_dec)
    ref = dense_decode(dense_topk_encode(x, W_enc, b_enc, 16, indices=indices), W_dec)
    assert out.dtype == torch.float32 and (out - ref).norm() / ref.norm() < 0.01
    got = torch.autograd.grad(out.pow(2).sum(), params)
    want = torch.autograd.grad(ref.pow(2).sum(), params)
    for name, a, b in zip(["x", "W_enc", "b_enc", "W_dec"], got, want):
        assert a.dtype == torch.float32 and (a - b).norm() / b.norm() < 0.02, name


def test_training_on_device_matches_cpu(tmp_path):
    """The same TopK run (tiny model, same batches) on the device and on CPU ends at close weights."""
    import saes  # noqa: F401
    from interp.data.activations import ActivationStore
    from interp.dictionary import DictionaryConfig, architecture
    from interp.model import load_model
    from interp.training.loop import TrainConfig, train

    hook, weights = "blocks.1.hook_resid_post", {}
    for side, device in (("reference", "cpu"), ("device", DEVICE.type)):
        torch.manual_seed(0)
        model = load_model("tiny:n_layers=2,d_model=32,n_heads=4,d_mlp=64,n_ctx=64", device)
        store = ActivationStore(model, {"x": hook}, batch_size=256, n_ctx=64, device=device)
        sae = architecture("topk")(DictionaryConfig(arch="topk", d_in=32, d_dict=128, k=8, hook_in=hook)).to(device)
        cfg = TrainConfig(tokens=256 * 12, lr=1e-3, checkpoint_every=1000, tf32=False)
        (trained,) = train([sae], store, cfg, tmp_path / side)
        weights[side] = {k: v.detach().cpu() for k, v in trained.state_dict().items()}
    for name, w in weights["reference"].items():
        assert (weights["device"][name] - w).norm() <= 1e-3 * max(1.0, w.norm()), name
