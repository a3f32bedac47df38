"""Rendering feature dashboards through the jinja2 templates vs the f-string renderer they replaced.

    ours      interp.viz.dashboard (templates/feature.html.j2, autoescaped)
    baseline  interp/viz/dashboard.py as of --baseline-commit (f-strings with hand-called escapes), read from
              git history and run in the same process on the same statistics

Statistics are synthetic but shaped like `interp features` defaults (top 20 contexts, 4 bands x 5 samples,
15-token windows, 32-bin histograms, 10 logits, 5 neighbours) over a vocabulary of hostile-looking strings.
Every page of both renderers is compared byte for byte before anything is timed.

Run: python benchmarks/bench_render.py [--features 1000] [--baseline-commit 7222b33]
"""

import argparse
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from interp.analysis.features import FeatureStats  # noqa: E402
from interp.viz import dashboard  # noqa: E402


def synthetic_stats(d_dict: int, vocab: int = 2000, n_top: int = 20, bands: int = 4, per_band: int = 5,
                    window: int = 15, bins: int = 32, seed: int = 0) -> FeatureStats:
    g = torch.Generator().manual_seed(seed)
    ids = lambda *shape: torch.randint(-1, vocab, shape, generator=g)  # noqa: E731 - -1 is padding
    acts = lambda *shape: torch.rand(shape, generator=g).clamp_min(0.3) - 0.3  # noqa: E731 - some exact zeros
    tensors = {"fires": torch.randint(0, 50, (d_dict,), generator=g), "act_sum": torch.rand(d_dict, generator=g) * 40,
               "max_act": torch.rand(d_dict, generator=g) + 0.5, "hist": torch.randint(0, 9, (d_dict, bins), generator=g),
               "hist_upper": torch.rand(d_dict, generator=g) + 1, "head_sum": torch.zeros(d_dict, 0),
               "top_value": torch.rand(d_dict, n_top, generator=g), "top_tokens": ids(d_dict, n_top, window),
               "top_acts": acts(d_dict, n_top, window), "sample_value": torch.rand(d_dict, bands, per_band, generator=g),
               "sample_tokens": ids(d_dict, bands, per_band, window), "sample_acts": acts(d_dict, bands, per_band, window),
               "logit_top_ids": ids(d_dict, 10).clamp_min(0), "logit_top": torch.rand(d_dict, 10, generator=g),
               "logit_bottom_ids": ids(d_dict, 10).clamp_min(0), "logit_bottom": -torch.rand(d_dict, 10, generator=g),
               "neighbour_ids": ids(d_dict, 5).clamp_min(0), "neighbour_cos": torch.rand(d_dict, 5, generator=g)}
    meta = {"d_dict": d_dict, "tokens_seen": 100_000, "left": 10, "bands": bands, "n_heads": 0, "arch": "topk",
            "hook_in": "blocks.6.hook_resid_post", "hook_out": "blocks.6.hook_resid_post", "source": "shakespeare"}
    strings = [" the", "<script>", "a&b", "\"q\"", "'", "\n", "\t\x07", "é", " Romeo"]
    return FeatureStats(tensors, meta, {i: strings[i % len(strings)] + str(i) for i in range(vocab)})


def baseline_module(commit: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{commit}:interp/viz/dashboard.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("dashboard_baseline")
    exec(compile(source, f"{commit}:interp/viz/dashboard.py", "exec"), module.__dict__)
    return module


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--features", type=int, default=1000)
    p.add_argument("--baseline-commit", default="7222b33", help="a commit whose dashboard.py used f-strings")
    args = p.parse_args()
    stats, old = synthetic_stats(args.features), baseline_module(args.baseline_commit)
    modes = [("svg", False), ("div", True)]
    for histogram, links in modes:
        for i in range(stats.d_dict):
            ours = dashboard.feature_html(stats, i, histogram=histogram, links=links)
            assert ours == old.feature_html(stats, i, histogram=histogram, links=links), f"feature {i} ({histogram}) differs"
    print(f"{stats.d_dict} features x {len(modes)} modes: every page byte-identical to {args.baseline_commit}")
    for name, module in (("baseline (f-strings)", old), ("ours (templates)", dashboard)):
        seconds = timed(lambda: [module.feature_html(stats, i, histogram=h, links=k) for h, k in modes for i in range(stats.d_dict)])
        print(f"{name:22s} {seconds:.3f} s for {2 * stats.d_dict} pages ({1e3 * seconds / (2 * stats.d_dict):.2f} ms/page)")
        if module is old:
            base = seconds
    print(f"ratio ours / baseline: {seconds / base:.2f}x")
    with tempfile.TemporaryDirectory() as tmp:
        site = [timed(lambda: module.write_site(stats, Path(tmp) / name), 1) for name, module in (("a", old), ("b", dashboard))]
    print(f"write_site: baseline {site[0]:.2f} s, ours {site[1]:.2f} s (ratio {site[1] / site[0]:.2f}x)")


if __name__ == "__main__":
    main()
