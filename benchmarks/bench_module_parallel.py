"""Module-parallel sweeps under torchrun on CPU (gloo): 2 ranks each training one of
two dictionaries from one shared model pass, against 1 rank training both.

Every run trains the same sweep (`--k 16,32`) on the same global batch; the
2-rank data-parallel run of the same sweep is printed for comparison. On a
2-core machine each of 2 ranks gets one thread and the single rank gets two,
so the ratio shows the overhead of gathering the batch, not a speed-up; a
single rank with one thread is printed too, because two threads of one process
suffer most when other processes load the machine. Prints
tokens/s (process start, harvest, training and eval included) and the ratio
module-parallel 2 ranks / 1 rank, measured in the same run; with --rounds R the
runs take turns R times and the fastest of each is kept (a shared machine only
ever adds time).

    python benchmarks/bench_module_parallel.py [--tokens 65536] [--rounds 1]
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import torchrun_throughput  # noqa: E402


def run(nproc: int, parallel: str, threads: int, args) -> float:
    return torchrun_throughput(nproc, args.model, args.hook, args.tokens, ["--k", "16,32", "--parallel", parallel],
                               threads, 29410 + nproc)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny:n_layers=4,d_model=256,n_heads=8,d_mlp=1024,n_ctx=128")
    p.add_argument("--hook", default="blocks.2.hook_resid_post")
    p.add_argument("--tokens", type=int, default=65536)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    configs = {"1 rank, both dictionaries": (1, "data", 2), "2 ranks, module-parallel": (2, "module", 1),
               "2 ranks, data-parallel": (2, "data", 1), "1 rank, 1 thread": (1, "data", 1)}
    best, load = {name: 0.0 for name in configs}, os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, (nproc, parallel, threads) in configs.items():
            best[name] = max(best[name], run(nproc, parallel, threads, args))
    print(f"sweep of 2 TopK dictionaries (k 16, 32; width 2048) on {args.model} {args.hook}, {args.tokens:,} tokens, "
          f"batch 1024, gloo, {args.rounds} round(s), load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    for name, tps in best.items():
        print(f"{name:28s}: {tps:,.0f} tokens/s")
    one = best["1 rank, both dictionaries"]
    print(f"ratio module-parallel 2 ranks / 1 rank (2 threads): {best['2 ranks, module-parallel'] / one:.2f}")
    print(f"ratio data-parallel 2 ranks / 1 rank (2 threads):   {best['2 ranks, data-parallel'] / one:.2f}")
    print(f"ratio module-parallel 2 ranks / 1 rank with 1 thread: {best['2 ranks, module-parallel'] / best['1 rank, 1 thread']:.2f}")


if __name__ == "__main__":
    main()
