"""Jacobian Gram of the interaction basis: random +-1 sources against exact pullbacks, in one process.

Workload: a random 2-layer TransformerLens model (d_model 64, byte tokens), the Jacobian Gram of
blocks.1.hook_resid_pre with respect to blocks.0.hook_resid_pre over 4 contexts of 32 tokens, the
next layer in a random 64-direction basis. Exact = 32 x 64 = 2048 pullbacks per batch; stochastic = S.
Prints seconds (fastest of --rounds), the speed-up over exact, and the relative Frobenius error.

Run: python benchmarks/bench_interaction.py [--rounds 2] [--sources 8,32,128]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import best_times  # noqa: E402

from interp.analysis.interaction_models import transformer_chain  # noqa: E402
from interp.analysis.jacobians import jacobian_gram  # noqa: E402
from interp.model import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sources", default="8,32,128")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model("tiny:n_layers=2,d_model=64,n_heads=4,d_mlp=256,n_ctx=64")
    chain = transformer_chain(model, ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "logits"])
    tokens = torch.randint(0, 256, (4, 32))
    tokens[:, 0] = 256
    batch = {"tokens": tokens}
    triples = [(chain.first(batch), chain.mask(batch, 32), chain.mask(batch, 32))]
    C = torch.randn(65, 64, dtype=torch.float64) / 8
    step = chain.steps[0]
    exact = jacobian_gram(step, triples, C, sources=0)
    calls = {"exact": lambda: jacobian_gram(step, triples, C, sources=0)}
    sources = [int(s) for s in args.sources.split(",")]
    for s in sources:
        calls[f"S={s}"] = lambda s=s: jacobian_gram(step, triples, C, sources=s, seed=1)
    times = best_times(calls, rounds=args.rounds)
    print(f"{'method':>8} {'seconds':>9} {'speed-up':>9} {'rel. error':>11}")
    print(f"{'exact':>8} {times['exact']:9.3f} {1.0:9.2f} {0.0:11.4f}")
    for s in sources:
        err = ((jacobian_gram(step, triples, C, sources=s, seed=1) - exact).norm() / exact.norm()).item()
        print(f"{'S=' + str(s):>8} {times[f'S={s}']:9.3f} {times['exact'] / times[f'S={s}']:9.2f} {err:11.4f}")


if __name__ == "__main__":
    main()
