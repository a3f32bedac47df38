"""`interp eval` of a default-shaped run: the three-full-pass reference against the shared-prefix fast path.

The default run is a TopK SAE (k 32, 4,608 latents) on the embedded SmolLM2-135M at
blocks.6.hook_resid_post, evaluated on held-out Shakespeare contexts of 128 tokens,
8 per batch, as `interp eval` does. Both implementations take turns in one process
(common.best_times), so the ratio holds on a shared machine; the metrics of both
are printed side by side. A sweep of N members (evaluate_many) is timed against N
reference evaluations with --members N. --transcoder-set evaluates one transcoder
per layer (30, MLP input to MLP output, TopK k 16, 1,152 latents, initialised from
activations) instead: each member's variants resume at its own block, against
the reference's three full passes per member. --profile prints torch.profiler's
top operators of one fast evaluation.

Run: python benchmarks/bench_eval.py [--run runs/demo] [--contexts 64] [--rounds 2] [--members 1]
                                     [--transcoder-set] [--profile]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import best_times, machine_line  # noqa: E402

import saes  # noqa: E402,F401 - registers the architectures
from interp.analysis.evals import evaluate_many, evaluate_reference  # noqa: E402
from interp.data.tokens import take_contexts  # noqa: E402
from interp.dictionary import Dictionary, DictionaryConfig, architecture  # noqa: E402
from interp.model import load_model  # noqa: E402

HOOK = "blocks.6.hook_resid_post"


def dictionaries(run: str | None, members: int, model) -> list[Dictionary]:
    """The saved run's SAE (repeated), or default-shaped TopK SAEs initialised from the model's activations."""
    if run and Path(run).is_dir():
        return [Dictionary.load(run) for _ in range(members)]
    print(f"no run folder at {run!r}: default-shaped TopK SAEs initialised from activations (metrics are not a trained SAE's)")
    tokens = take_contexts(model, "shakespeare", "train", 128, 8)
    _, cache = model.run_with_cache(tokens, names_filter=[HOOK], stop_at_layer=7)
    x = cache[HOOK].flatten(0, 1)
    out = []
    for i in range(members):
        d = architecture("topk")(DictionaryConfig(arch="topk", d_in=576, d_dict=4608, k=32, hook_in=HOOK, model="embedded"))
        d.init_from_data(x, x, torch.Generator().manual_seed(i))
        out.append(d)
    return out


def transcoder_set(model) -> list[Dictionary]:
    """One TopK transcoder per layer (MLP input -> MLP output), initialised from the model's activations."""
    from transcoders.config import mlp_hooks, transcoder_config

    tokens = take_contexts(model, "shakespeare", "train", 128, 4)
    names = [name for layer in range(model.cfg.n_layers) for name in mlp_hooks(layer).values()]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    out = []
    for layer in range(model.cfg.n_layers):
        cfg = transcoder_config(model.cfg.d_model, layer, d_dict=1152, k=16, model="embedded")
        d = architecture("topk")(cfg)
        x, y = (cache[name].flatten(0, 1) for name in mlp_hooks(layer).values())
        d.init_from_data(x, y, torch.Generator().manual_seed(layer))
        out.append(d)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/demo", help="a run folder to evaluate (default-shaped SAEs if absent)")
    p.add_argument("--contexts", type=int, default=64, help="held-out contexts of 128 tokens (interp eval's default: 64)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--members", type=int, default=1, help="dictionaries evaluated together (a sweep)")
    p.add_argument("--transcoder-set", action="store_true", help="one transcoder per layer instead of SAEs")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    print(machine_line())
    start = time.perf_counter()
    model = load_model("embedded")
    tokens = take_contexts(model, "shakespeare", "validation", 128, args.contexts)
    print(f"fixed costs of interp eval (model load, contexts): {time.perf_counter() - start:.1f} s")
    ds = transcoder_set(model) if args.transcoder_set else dictionaries(args.run, args.members, model)
    args.members = len(ds)
    results = {}

    def reference():
        results["reference"] = [evaluate_reference(model, d, tokens) for d in ds]

    def fast():
        results["fast"] = evaluate_many(model, ds, tokens)

    with torch.no_grad():
        t = best_times({"reference": reference, "fast": fast}, rounds=args.rounds, warmup=0)
    n = tokens.numel()
    print(f"{args.members} dictionar{'y' if args.members == 1 else 'ies'}, {len(tokens)} contexts ({n:,} tokens), best of {args.rounds}:")
    for name, s in t.items():
        print(f"  {name:9s} {s:8.1f} s   {args.members * n / s:8.0f} tokens/s")
    print(f"  fast / reference speed-up: {t['reference'] / t['fast']:.2f}x")
    print(f"\n{'metric':24s} {'reference':>12s} {'fast':>12s}")
    worst = 0.0
    for key, ref in results["reference"][0][0].items():
        value = results["fast"][0][0][key]
        print(f"{key:24s} {ref:12.6f} {value:12.6f}")
    for (ref_metrics, _), (fast_metrics, _) in zip(results["reference"], results["fast"]):  # every member
        worst = max([worst, *(abs(fast_metrics[k] - v) / max(1.0, abs(v)) for k, v in ref_metrics.items())])
    print(f"largest difference over metrics and members (relative above 1): {worst:.2e} "
          f"(four decimals: {'equal' if worst < 5e-5 else 'NOT equal'})")
    if args.profile:
        profile(model, ds, tokens)
    print(machine_line())


def profile(model, ds, tokens) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch.no_grad(), torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        evaluate_many(model, ds, tokens)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
