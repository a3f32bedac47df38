"""`interp eval`: recompute metrics.json for saved run folders."""

from __future__ import annotations

import json
from pathlib import Path

from interp.cli import add_source_arguments, headline

HELP = "recompute metrics.json for saved run folders"
DESCRIPTION = "Evaluate saved dictionaries on held-out text (any source) and rewrite metrics.json and density.html."


def add_arguments(e) -> None:
    e.add_argument("runs", nargs="+", help="run folders (with cfg.json and sae.safetensors, or a SAELens folder)")
    e.add_argument("--model", default=None, help="override the model recorded in cfg.json")
    e.add_argument("--split", default="validation")
    add_source_arguments(e)


def run(args) -> int:
    import torch

    import saes  # noqa: F401
    from interp.data.tokens import take_contexts
    from interp.dictionary import Dictionary
    from interp.analysis.evals import evaluate
    from interp.model import load_model
    from interp.training.runs import write_metrics

    models = {}
    for run in args.runs:
        d = Dictionary.load(run, args.device)
        spec = args.model or d.cfg.model
        if spec not in models:
            models[spec] = load_model(spec, args.device, getattr(torch, args.dtype))
        model = models[spec]
        tokens = take_contexts(model, args.source, args.split, args.n_ctx, args.eval_contexts, text_column=args.text_column)
        metrics, density = evaluate(model, d, tokens)
        metrics["tokens_trained"] = d.cfg.training.get("tokens", 0)
        write_metrics(Path(run), metrics, density)
        print(f"{run}: {json.dumps(headline(Path(run)))}")
    return 0
