"""Training and inference throughput of the kernels against a dense reference and the GEMM floor.

    W1  TopK SAE training step (encode, decode, MSE, backward, Adam, decoder renorm):
        (a) our sparse kernels, (b) a dense TopK reference, (c) the encoder GEMM alone (the floor)
    W2  ReLU + L1 SAE training step, same shapes (dense ops; the kernels have nothing to add)
    W3  inference: encode + decode of 65,536 activations, ours against the dense reference
    --bf16 adds W1 and W3 under CPU bf16 autocast (the encoder GEMM in bf16, on AMX where the
    CPU has it; values close to fp32, not equal: tests/test_kernels.py::test_bf16_autocast_close_to_fp32)

All rows take turns in one process (common.best_times), so their ratios hold
even when other processes share the CPU.

Run: python benchmarks/bench_train.py [--rounds 4] [--workloads W1,W2,W3] [--bf16] [--profile]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import SHAPES, Shapes, best_times, gemm_floor_call, synthetic_activations, use_device  # noqa: E402

from interp.kernels import sparse_decode, topk_encode  # noqa: E402
from interp.kernels.dense import dense_decode, dense_topk_encode  # noqa: E402
from interp.training.losses import reconstruction_loss  # noqa: E402


def init_params(s: Shapes) -> dict[str, torch.Tensor]:
    """The trained tensors: W_enc_rows [d_dict, d_in] = W_dec, unit-norm decoder rows, zero biases.

    The encoder is stored latent-major (as nn.Linear stores its weight) and used
    as its transpose W_enc [d_in, d_dict] (`weights`): the encoder backward then
    needs no transposing copy, and Adam steps a contiguous tensor (fused Adam
    copies a transposed one in and out on every step).
    """
    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(s.d_dict, s.d_in, generator=g, device="cpu").to(torch.get_default_device())
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    params = dict(W_enc_rows=W_dec.clone(), b_enc=torch.zeros(s.d_dict), W_dec=W_dec, b_dec=torch.zeros(s.d_in))
    return {name: p.requires_grad_() for name, p in params.items()}


def weights(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors the forward functions take: W_enc [d_in, d_dict] (a view of W_enc_rows), b_enc, W_dec, b_dec."""
    out = dict(params)
    out["W_enc"] = out.pop("W_enc_rows").t()
    return out


def topk_sparse(p, x, k):
    values, indices = topk_encode(x, p["W_enc"], p["b_enc"], k, centre=p["b_dec"])
    return sparse_decode(values, indices, p["W_dec"]) + p["b_dec"], 0.0


def topk_dense(p, x, k):
    codes = dense_topk_encode(x - p["b_dec"], p["W_enc"], p["b_enc"], k)
    return dense_decode(codes, p["W_dec"]) + p["b_dec"], 0.0


def bf16(forward):
    """`forward` under bf16 autocast on the benchmark's device."""

    def run(p, x, arg):
        with torch.autocast(torch.get_default_device().type, dtype=torch.bfloat16):
            return forward(p, x, arg)

    return run


def relu_l1(p, x, l1_coeff):
    codes = torch.relu((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"])
    sparsity = (codes * p["W_dec"].norm(dim=1)).sum(-1).mean()
    return codes @ p["W_dec"] + p["b_dec"], l1_coeff * sparsity


def train_step(forward, arg, s: Shapes = SHAPES, fused_adam: bool = True):
    """A closure running one full training step: forward, MSE (+ penalty), backward, Adam, decoder renorm."""
    p = init_params(s)
    opt = torch.optim.Adam(p.values(), lr=s.lr, fused=fused_adam or None)
    batches = synthetic_activations(4 * s.batch, s.d_in).split(s.batch)
    state = {"i": 0}

    def step():
        x = batches[state["i"] % len(batches)]
        state["i"] += 1
        recon, penalty = forward(weights(p), x, arg)
        loss = reconstruction_loss(recon, x) + penalty
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            p["W_dec"] /= p["W_dec"].norm(dim=1, keepdim=True)

    return step


def inference(forward, s: Shapes = SHAPES):
    """A closure encoding and decoding n_infer activations in batches, without autograd."""
    p = weights({name: t.detach() for name, t in init_params(s).items()})
    x = synthetic_activations(s.n_infer, s.d_in)

    def run():
        with torch.inference_mode():
            for batch in x.split(s.batch):
                forward(p, batch, s.k)

    return run


def profile_w1(steps: int = 2, top: int = 3) -> list[tuple[str, float]]:
    """The `top` ops by self CPU time of our W1 step: [(name, ms per step)]."""
    from torch.profiler import ProfilerActivity, profile

    step = train_step(topk_sparse, SHAPES.k)
    step()  # warm up outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, e.self_cpu_time_total / 1e3 / steps) for e in events[:top]]


def calls_for(workloads: set[str], s: Shapes = SHAPES, with_bf16: bool = False) -> dict[str, tuple]:
    """name -> (closure, tokens per call) for the floor and every row of `workloads`."""
    calls = {"floor": (gemm_floor_call(s), s.batch)}
    if "W1" in workloads:
        calls["W1 ours"] = (train_step(topk_sparse, s.k), s.batch)
        calls["W1 dense"] = (train_step(topk_dense, s.k), s.batch)
        if with_bf16:
            calls["W1 bf16"] = (train_step(bf16(topk_sparse), s.k), s.batch)
    if "W2" in workloads:
        calls["W2 ours"] = (train_step(relu_l1, s.l1_coeff), s.batch)
    if "W3" in workloads:
        calls["W3 ours"] = (inference(topk_sparse), s.n_infer)
        calls["W3 dense"] = (inference(topk_dense), s.n_infer)
        if with_bf16:
            calls["W3 bf16"] = (inference(bf16(topk_sparse)), s.n_infer)
    return calls


def blocks_line() -> str:
    """The CPU encoder's block heights this process measured (interp/kernels/blocks.py), for the output."""
    from interp.kernels.blocks import measured

    rows = [f"d_in {d_in} x d_dict {d_dict}, k {k}, {str(dtype).removeprefix('torch.')}, {threads} threads: {n} rows"
            for (d_in, d_dict, k, dtype, threads), n in measured().items()]
    return "CPU encoder blocks (measured): " + ("; ".join(rows) or "none (one block, or not on CPU)")


def tokens_per_s(calls: dict[str, tuple], rounds: int) -> dict[str, float]:
    """Run the calls in turns; tokens/s of each from its fastest round."""
    best = best_times({name: fn for name, (fn, _) in calls.items()}, rounds)
    return {name: tokens / best[name] for name, (_, tokens) in calls.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4, help="timed turns of every row (fewer = faster, noisier)")
    ap.add_argument("--workloads", default="W1,W2,W3")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="add W1 and W3 under CPU bf16 autocast")
    ap.add_argument("--profile", action="store_true", help="print the top 3 ops of W1 by self CPU time")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    use_device(args.device)
    r = tokens_per_s(calls_for(set(args.workloads.split(",")), with_bf16=args.bf16), args.rounds)
    floor = r["floor"]
    print(f"{'row':10s} {'tokens/s':>10s} {'/ floor':>8s}")
    for name, tps in r.items():
        print(f"{name:10s} {tps:10.0f} {tps / floor:8.2f}")
    for w in ("W1", "W3"):
        if f"{w} ours" in r:
            print(f"{w} ours / dense reference: {r[f'{w} ours'] / r[f'{w} dense']:.2f}x")
        if f"{w} bf16" in r:
            print(f"{w} bf16 autocast / fp32: {r[f'{w} bf16'] / r[f'{w} ours']:.2f}x")
    print(blocks_line())
    if args.profile:
        print("W1 top ops by self CPU time (ms per step):")
        for name, ms in profile_w1():
            print(f"  {name:50s} {ms:8.1f}")


if __name__ == "__main__":
    main()
