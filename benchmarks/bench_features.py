"""Throughput and memory of the feature-statistics pass (interp.analysis.features.compute_feature_stats).

    ours      the statistics pass: forward to the dictionary's hook, encode every latent, update the
              bounded per-latent state (top-N, range samples, histograms), then logit effects and
              decoder neighbours
    baseline  the plain forward pass to the same hook (run_with_cache, stop_at_layer) over the same
              contexts, measured in the same process

Peak RSS is sampled from /proc every 50 ms during each pass. Two passes of different length (a quarter of
the contexts, then all of them) show whether memory grows with the tokens read.

Run: python benchmarks/bench_features.py [--run runs/feat_sae] [--contexts 1600] [--n-ctx 128] [--site DIR]
"""

import argparse
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import saes  # noqa: E402,F401
from interp.data.tokens import take_contexts  # noqa: E402
from interp.dictionary import Dictionary  # noqa: E402
from interp.analysis.features import _stop_layer, compute_feature_stats  # noqa: E402
from interp.model import load_model  # noqa: E402
from interp.viz.dashboard import write_site  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


class PeakRSS:
    def __enter__(self):
        self.peak, self.done = rss_mib(), False
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while not self.done:
            self.peak = max(self.peak, rss_mib())
            time.sleep(0.05)

    def __exit__(self, *exc):
        self.done = True
        self.thread.join()
        self.peak = max(self.peak, rss_mib())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", default="runs/feat_sae")
    p.add_argument("--contexts", type=int, default=1600)
    p.add_argument("--n-ctx", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--baseline-contexts", type=int, default=256)
    p.add_argument("--site", default="")
    args = p.parse_args()
    torch.set_num_threads(2)
    d = Dictionary.load(args.run)
    model = load_model(d.cfg.model or "embedded")
    print(f"{d.cfg.arch} d_dict={d.d_dict} at {d.cfg.hook_in}; start RSS {rss_mib():.0f} MiB")

    tokens = take_contexts(model, "shakespeare", "train", args.n_ctx, args.baseline_contexts)
    stop = _stop_layer(model, [d.cfg.hook_in])
    start = time.perf_counter()
    with torch.no_grad():
        for batch in tokens.split(args.batch_size):
            model.run_with_cache(batch, names_filter=[d.cfg.hook_in], stop_at_layer=stop)
    base = (time.perf_counter() - start) / tokens.numel()
    print(f"baseline forward: {1 / base:,.0f} tokens/s")

    for contexts in (args.contexts // 4, args.contexts):
        with PeakRSS() as mem:
            start = time.perf_counter()
            stats = compute_feature_stats(model, d, "shakespeare", "train", args.n_ctx, contexts, args.batch_size)
            wall = time.perf_counter() - start
        n = contexts * args.n_ctx
        state = sum(t.numel() * t.element_size() for t in stats.tensors.values()) / 2**20
        print(f"stats pass: {n:,} tokens in {wall:.1f} s ({n / wall:,.0f} tokens/s), peak RSS {mem.peak:.0f} MiB, "
              f"saved state {state:.1f} MiB; ratio to the plain forward {wall / n / base:.2f}x")
    if args.site:
        start = time.perf_counter()
        write_site(stats, args.site)
        stats.save(Path(args.site) / "stats")
        size = sum(f.stat().st_size for f in Path(args.site).rglob("*") if f.is_file()) / 2**20
        print(f"site: {d.d_dict} pages in {time.perf_counter() - start:.1f} s, {size:.0f} MiB on disk")


if __name__ == "__main__":
    main()
