"""Throughput of `interp train` under torchrun with 1 and 2 ranks on CPU (gloo).

On a 2-core machine the point is correctness and overhead, not speed: each
rank gets one thread. Prints tokens/s for each and the ratio 2 ranks / 1 rank,
measured in the same run.

    python benchmarks/bench_ddp.py [--model embedded] [--tokens 65536]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import torchrun_throughput  # noqa: E402


def run(nproc: int, args) -> float:
    return torchrun_throughput(nproc, args.model, args.hook, args.tokens, [], max(1, 2 // nproc), 29400 + nproc)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny:n_layers=4,d_model=256,n_heads=8,d_mlp=1024,n_ctx=128")
    p.add_argument("--hook", default="blocks.2.hook_resid_post")
    p.add_argument("--tokens", type=int, default=65536)
    args = p.parse_args()
    one, two = run(1, args), run(2, args)
    print(f"1 rank : {one:,.0f} tokens/s (process start, harvest, training and eval included)")
    print(f"2 ranks: {two:,.0f} tokens/s")
    print(f"ratio 2/1: {two / one:.2f}")


if __name__ == "__main__":
    main()
