"""The kernels against a dense autograd reference, and the Triton path against the torch path."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from interp.kernels import (
    resolve_backend,
    sparse_decode,
    to_dense,
    topk_encode,
    triton_available,
    triton_interpreting,
)
from interp.kernels.dense import dense_decode, dense_topk_encode
from interp.kernels.topk import topk_rows


@pytest.fixture(autouse=True)
def blocks_of_256_rows(monkeypatch):
    """600-row inputs cross the CPU encoder's blocks (their height is otherwise measured, and these shapes fit one)."""
    monkeypatch.setenv("INTERP_CPU_BLOCK_ROWS", "256")


def make(n=24, d_in=12, d_dict=64, d_out=10, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=dtype)
    W_enc = torch.randn(d_in, d_dict, generator=g, dtype=dtype)
    b_enc = 0.1 * torch.randn(d_dict, generator=g, dtype=dtype)
    W_dec = torch.randn(d_dict, d_out, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (x, W_enc, b_enc, W_dec)]


def grads(loss, params):
    return torch.autograd.grad(loss, params)


def sparse_forward(x, W_enc, b_enc, W_dec, k, backend="torch"):
    values, indices = topk_encode(x, W_enc, b_enc, k)
    return values, indices, sparse_decode(values, indices, W_dec, backend=backend)


@pytest.mark.parametrize("k", [1, 5, 64])  # 64 == d_dict
@pytest.mark.parametrize("n", [24, 600])  # 600 rows cross the CPU blocks
def test_matches_dense_reference(k, n):
    params = make(n=n)
    x, W_enc, b_enc, W_dec = params
    target = torch.randn(n, W_dec.shape[1], dtype=torch.float64)
    values, indices, out = sparse_forward(x, W_enc, b_enc, W_dec, k)
    codes = dense_topk_encode(x, W_enc, b_enc, k)
    ref_out = dense_decode(codes, W_dec)
    torch.testing.assert_close(to_dense(values, indices, W_enc.shape[1]), codes)
    torch.testing.assert_close(out, ref_out)
    got = grads(((out - target) ** 2).sum() + values.sum(), params)
    want = grads(((ref_out - target) ** 2).sum() + codes.sum(), params)
    for name, a, b in zip(["x", "W_enc", "b_enc", "W_dec"], got, want):
        torch.testing.assert_close(a, b, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("n", [24, 600])
@pytest.mark.parametrize("stacked", [False, True])
def test_centre_matches_subtracting_it_first(n, stacked):
    """topk_encode(x, ..., centre=c) is topk_encode(x - c, ...): same codes, and the same gradients for x, W_enc,
    b_enc and c (c's from -W_enc @ grad b_enc rather than from a pass over the rows)."""
    members = [make(n=n, seed=s) for s in range(2 if stacked else 1)]
    centres = [torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(9 + s)) for s in range(len(members))]
    pick = (lambda ts: torch.stack(ts)) if stacked else (lambda ts: ts[0])
    x, W_enc, b_enc, W_dec = (pick([m[i].detach() for m in members]).requires_grad_() for i in range(4))
    centre = pick(centres).requires_grad_()
    target = torch.randn(*x.shape[:-1], W_dec.shape[-1], dtype=torch.float64)
    params = [x, W_enc, b_enc, W_dec, centre]
    results = []
    for fused in (True, False):
        if fused:
            values, indices = topk_encode(x, W_enc, b_enc, 5, centre=centre)
        else:
            values, indices = topk_encode(x - (centre[:, None] if stacked else centre), W_enc, b_enc, 5)
        out = sparse_decode(values, indices, W_dec, backend="torch")
        results.append((values, indices, *grads(((out - target) ** 2).sum() + values.sum(), params)))
    for name, a, b in zip(["values", "indices", "x", "W_enc", "b_enc", "W_dec", "centre"], *results):
        torch.testing.assert_close(a, b, msg=lambda m: f"{name}: {m}")
    with pytest.raises(ValueError, match="centre"):
        topk_encode(x, W_enc, b_enc, 5, centre=centre[..., :3])


def test_exactly_k_distinct_latents():
    x, W_enc, b_enc, _ = make(n=50, d_dict=256)
    values, indices = topk_encode(x, W_enc, b_enc + 100.0, 8)  # all pre-activations positive
    assert values.shape == indices.shape == (50, 8) and indices.dtype == torch.int64
    assert all(len(set(row.tolist())) == 8 for row in indices)
    assert ((to_dense(values, indices, 256) != 0).sum(1) == 8).all()


def test_relu_zeroes_negative_selections():
    x, W_enc, b_enc, _ = make(d_dict=32)
    values, _ = topk_encode(x, W_enc, b_enc - 100.0, 4)  # every pre-activation negative
    assert (values == 0).all()


def test_ties_give_a_valid_topk_and_matching_gradients():
    x, W_enc, b_enc, W_dec = make(n=16, d_in=6, d_dict=128)
    with torch.no_grad():  # eight copies of 16 columns: every value appears 8 times per row
        W_enc.copy_(W_enc[:, :16].repeat(1, 8))
        b_enc.zero_()
    k = 12
    values, indices, out = sparse_forward(x, W_enc, b_enc, W_dec, k)
    pre = (x @ W_enc).detach()
    kth = pre.topk(k, dim=1).values[:, -1:]
    assert (pre.gather(1, indices) >= kth).all()
    torch.testing.assert_close(values.sort(1).values, pre.topk(k, dim=1).values.relu().sort(1).values)
    assert all(len(set(row.tolist())) == k for row in indices)
    codes = dense_topk_encode(x, W_enc, b_enc, k, indices=indices)
    got = grads(out.sum() + values.pow(2).sum(), [x, W_enc, b_enc, W_dec])
    want = grads(dense_decode(codes, W_dec).sum() + codes.pow(2).sum(), [x, W_enc, b_enc, W_dec])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("m,k", [(65536, 32), (8192, 32), (4096, 300), (1000, 7), (96, 30)])  # 65536: split twice
def test_topk_rows_is_exact(m, k):
    pre = torch.randn(40, m, generator=torch.Generator().manual_seed(m))
    pre[:, ::7] = pre[:, :1]  # plant ties
    values, indices = topk_rows(pre, k)
    torch.testing.assert_close(pre.gather(1, indices), values)
    torch.testing.assert_close(values.sort(1).values, pre.topk(k, dim=1).values.sort(1).values)
    assert all(len(set(row.tolist())) == k for row in indices)


def test_gradcheck():
    x, W_enc, b_enc, W_dec = make(n=5, d_in=4, d_dict=12, d_out=3)
    k = 3
    # gradcheck perturbs inputs; keep the top-k selection away from ties
    with torch.no_grad():
        b_enc.copy_(torch.linspace(0, 5.5, 12, dtype=torch.float64))

    def f(x, W_enc, b_enc, W_dec):
        values, indices = topk_encode(x, W_enc, b_enc, k)
        return sparse_decode(values, indices, W_dec, backend="torch"), values

    assert torch.autograd.gradcheck(f, (x, W_enc, b_enc, W_dec))


def test_leading_dims_and_shape_errors():
    x, W_enc, b_enc, W_dec = make(n=6)
    values, indices = topk_encode(x.reshape(2, 3, -1), W_enc, b_enc, 4)
    assert values.shape == (2, 3, 4)
    assert sparse_decode(values, indices, W_dec).shape == (2, 3, W_dec.shape[1])
    with pytest.raises(ValueError, match="d_in"):
        topk_encode(x[:, :3], W_enc, b_enc, 4)
    with pytest.raises(ValueError, match="k=65"):
        topk_encode(x, W_enc, b_enc, 65)


def test_decode_mixed_dtypes():
    _, _, _, W_dec = make(d_out=6)
    values = torch.rand(7, 3, requires_grad=True)  # float32 codes into a float64 decoder
    indices = torch.randint(0, 64, (7, 3))
    out = sparse_decode(values, indices, W_dec, backend="torch")
    grad_values, grad_W = torch.autograd.grad(out.sum(), [values, W_dec])
    assert out.dtype == grad_W.dtype == torch.float64 and grad_values.dtype == torch.float32
    want = torch.autograd.grad(dense_decode(to_dense(values.double(), indices, 64), W_dec).sum(), W_dec)[0]
    torch.testing.assert_close(grad_W, want)


def test_backend_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_backend(None, cpu) == "torch"
    monkeypatch.setenv("INTERP_KERNELS", "torch")
    assert resolve_backend(None, torch.device("cuda")) == "torch"
    monkeypatch.setenv("INTERP_KERNELS", "cuda")
    with pytest.raises(ValueError, match="not one of"):
        resolve_backend(None, cpu)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="triton"):
        resolve_backend("triton", cpu)


INTERPRETING = triton_interpreting()


@pytest.mark.skipif(not INTERPRETING, reason="needs TRITON_INTERPRET=1 before triton is imported; "
                    "test_triton_under_interpreter runs it in a subprocess")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k,d_out", [(5, 10), (20, 130)])  # ragged blocks of k and d_out
@pytest.mark.parametrize("stacked", [False, True])
def test_triton_matches_torch(dtype, k, d_out, stacked):
    x, W_enc, b_enc, W_dec = make(n=9, d_dict=40, d_out=d_out, dtype=dtype)
    if stacked:  # two members, the first with a smaller k (zero-padded)
        x2, W_enc2, b_enc2, W_dec2 = make(n=9, d_dict=40, d_out=d_out, dtype=dtype, seed=1)
        x, W_enc, b_enc = torch.stack([x, x2]), torch.stack([W_enc, W_enc2]), torch.stack([b_enc, b_enc2])
        W_dec = torch.stack([W_dec, W_dec2]).detach().requires_grad_()
    values, indices = topk_encode(x, W_enc, b_enc, [max(1, k - 3), k] if stacked else k)
    values = values.detach().requires_grad_()
    grad_out = torch.randn(*values.shape[:-1], d_out, dtype=dtype)
    results = {}
    for backend in ["torch", "triton"]:
        out = sparse_decode(values, indices, W_dec, backend=backend)
        results[backend] = (out, *torch.autograd.grad(out, [values, W_dec], grad_out))
    for a, b in zip(results["triton"], results["torch"]):
        torch.testing.assert_close(a, b)


def test_triton_under_interpreter():
    """Runs test_triton_matches_torch in a fresh process where triton starts in interpreter mode."""
    if not triton_available():
        pytest.skip("triton cannot be imported")
    if INTERPRETING:
        pytest.skip("test_triton_matches_torch runs in this process")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::test_triton_matches_torch"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and " skipped" not in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("ks", [(5, 5, 5), (3, 8, 5)])
@pytest.mark.parametrize("n", [24, 600])
@pytest.mark.parametrize("one_gemm", [False, True], ids=["cpu-chunks", "one-batched-gemm"])
def test_stack_equals_members_one_by_one(ks, n, one_gemm, monkeypatch):
    """E dictionaries stacked ([E, d_in, d_dict], one k each) give each member's own codes, outputs and gradients
    (also through the one-GEMM path that CUDA takes)."""
    monkeypatch.setattr("interp.kernels.encode._one_gemm_for_the_stack", lambda x: one_gemm)
    members = [make(n=n, seed=s) for s in range(len(ks))]
    x, W_enc, b_enc, W_dec = (torch.stack([m[i].detach() for m in members]).requires_grad_() for i in range(4))
    values, indices = topk_encode(x, W_enc, b_enc, list(ks))
    out = sparse_decode(values, indices, W_dec, backend="torch")
    assert values.shape == indices.shape == (len(ks), n, max(ks))
    target = torch.randn(out.shape, dtype=out.dtype)
    got = grads(((out - target) ** 2).sum() + values.sum(), [x, W_enc, b_enc, W_dec])
    for e, (k, params) in enumerate(zip(ks, members)):
        v, i, o = sparse_forward(*params, k)
        assert (values[e, :, k:] == 0).all()
        torch.testing.assert_close(to_dense(values[e], indices[e], 64), to_dense(v, i, 64))
        torch.testing.assert_close(out[e], o)
        want = grads(((o - target[e]) ** 2).sum() + v.sum(), params)
        for name, a, b in zip(["x", "W_enc", "b_enc", "W_dec"], got, want):
            torch.testing.assert_close(a[e], b, msg=lambda m: f"member {e} grad {name}: {m}")


def test_stack_shape_errors():
    x, W_enc, b_enc, _ = make()
    with pytest.raises(ValueError, match="one k or E"):
        topk_encode(x.expand(2, -1, -1), W_enc.expand(2, -1, -1), b_enc.expand(2, -1), [4, 4, 4])
    with pytest.raises(ValueError, match="W_enc \\[E, d_in, d_dict\\]"):
        topk_encode(x.expand(3, -1, -1), W_enc.expand(2, -1, -1), b_enc.expand(2, -1), 4)


@pytest.mark.parametrize("n", [24, 600])
def test_bf16_autocast_close_to_fp32(n, monkeypatch):
    """Under CPU bf16 autocast the encoder GEMM runs in bf16 and gradients keep the parameters' dtype;
    on the latents it selects, outputs and gradients match the fp32 reference within bf16 rounding."""
    params = make(n=n, d_dict=256, dtype=torch.float32)
    x, W_enc, b_enc, W_dec = params
    target = torch.randn(n, W_dec.shape[1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values, indices = topk_encode(x, W_enc, b_enc, 8)
        out = sparse_decode(values, indices, W_dec, backend="torch")
    assert values.dtype == torch.bfloat16 and out.dtype == torch.float32
    got = grads((out - target).pow(2).sum(), params)
    assert all(g.dtype == torch.float32 for g in got)
    same = (indices.sort(-1).values == topk_encode(x, W_enc, b_enc, 8)[1].sort(-1).values).all(-1)
    assert same.float().mean() > 0.9  # bf16 rounding reorders only near-ties
    ref_out = dense_decode(dense_topk_encode(x, W_enc, b_enc, 8, indices=indices), W_dec)
    want = grads((ref_out - target).pow(2).sum(), params)
    assert (out - ref_out).norm() / ref_out.norm() < 0.01
    for name, a, b in zip(["x", "W_enc", "b_enc", "W_dec"], got, want):
        assert (a - b).norm() / b.norm() < 0.01, name
