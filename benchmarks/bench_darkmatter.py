"""Throughput of the streaming least-squares fit behind the dark-matter decomposition.

    ours      interp.analysis.regression.StreamingLstsq: X^T X and X^T E accumulated in float64
              over batches of 4096 rows (d^2 memory), then a Cholesky solve
    baseline  torch.linalg.lstsq on the whole [n, d] float64 matrix (n x d memory)

Both fit the same e ~ x a (d_in = d_out = d) on the same synthetic activations in
one process, taking turns (common.best_times), and the two solutions are compared.

Run: python benchmarks/bench_darkmatter.py [--n 32768] [--d 576] [--rounds 3]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import best_times, synthetic_activations  # noqa: E402

from interp.analysis.regression import StreamingLstsq  # noqa: E402


def workload(n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [n, d] float32 activations and an error e [n, d] that is partly linear in x, partly not."""
    x = synthetic_activations(n, d)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(d, d, generator=g) / d**0.5
    return x, 0.3 * (x @ a) + 0.1 * torch.tanh(3 * x) + 0.05 * torch.randn(n, d, generator=g)


def streaming(x: torch.Tensor, e: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    acc = StreamingLstsq(x.shape[1], e.shape[1])
    for xb, eb in zip(x.split(batch), e.split(batch)):
        acc.update(xb, eb)
    return acc.solve().weight


def baseline(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    return torch.linalg.lstsq(x.double(), e.double()).solution


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32768, help="tokens")
    ap.add_argument("--d", type=int, default=576, help="d_model (SmolLM2-135M: 576)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, e = workload(args.n, args.d)
    out = {}
    calls = {"streaming (ours)": lambda: out.__setitem__("ours", streaming(x, e)),
             "torch.linalg.lstsq": lambda: out.__setitem__("ref", baseline(x, e))}
    best = best_times(calls, args.rounds)
    diff = (out["ours"] - out["ref"]).abs().max().item() / out["ref"].abs().max().item()
    print(f"n={args.n} d={args.d} threads={args.threads}")
    print(f"{'row':22s} {'seconds':>8s} {'tokens/s':>10s}")
    for name, s in best.items():
        print(f"{name:22s} {s:8.3f} {args.n / s:10.0f}")
    print(f"max relative difference of the solutions: {diff:.2e}")
    print(f"streaming / lstsq throughput: {best['torch.linalg.lstsq'] / best['streaming (ours)']:.2f}x")
    peak = {"streaming": 2 * 4096 * args.d * 8 + 2 * args.d * args.d * 8, "lstsq": 2 * args.n * args.d * 8}
    print(f"working memory beyond the inputs (MiB): streaming {peak['streaming'] / 2**20:.1f}, lstsq {peak['lstsq'] / 2**20:.1f}")


if __name__ == "__main__":
    main()
