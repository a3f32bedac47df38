"""`interp eval`: recompute metrics.json for saved run folders."""

from __future__ import annotations

import json
from pathlib import Path

from interp.cli import add_source_arguments, headline

HELP = "recompute metrics.json for saved run folders"
DESCRIPTION = "Evaluate saved dictionaries on held-out text (any source) and rewrite metrics.json and density.html."


def add_arguments(e) -> None:
    e.add_argument("runs", nargs="+", help="run folders, or any dictionary source load_dictionary reads (a SAELens/sparsify/"
                   "Gemma Scope/dictionary_learning folder, owner/repo:sub/folder on the hub)")
    e.add_argument("--model", default=None, help="override the model recorded in cfg.json")
    e.add_argument("--split", default="validation")
    add_source_arguments(e)


def run(args) -> int:
    import torch

    from interp.data.tokens import take_contexts
    from interp.io import check_compatible, load_dictionary
    from interp.analysis.evals import evaluate
    from interp.model import load_model
    from interp.training.runs import write_metrics

    models = {}
    for run in args.runs:
        if _is_transcoder_set(run):  # a CLT or a folder of per-layer transcoders: the all-MLPs-replaced model
            _evaluate_set(args, Path(run), models)
            continue
        d = load_dictionary(run, device=args.device)
        spec = args.model or d.cfg.model
        if spec not in models:
            models[spec] = load_model(spec, args.device, getattr(torch, args.dtype))
        model = models[spec]
        check_compatible(d, model)
        tokens = take_contexts(model, args.source, args.split, args.n_ctx, args.eval_contexts, text_column=args.text_column)
        metrics, density = evaluate(model, d, tokens)
        metrics["tokens_trained"] = d.cfg.training.get("tokens", 0)
        if not Path(run).is_dir():  # a hub source: no run folder of ours to write into
            print(f"{run}: {json.dumps({k: round(float(v), 4) for k, v in metrics.items() if isinstance(v, float)})}")
            continue
        write_metrics(Path(run), metrics, density)
        print(f"{run}: {json.dumps(headline(Path(run)))}")
    return 0


def _is_transcoder_set(run: str) -> bool:
    """A CLT folder (clt.json) or a transcoder set (layer_*/cfg.json run folders, no cfg.json of its own)."""
    folder = Path(run)
    return (folder / "clt.json").is_file() or (folder.is_dir() and not (folder / "cfg.json").exists()
                                               and any(folder.glob("layer_*/cfg.json")))


def _evaluate_set(args, folder: Path, models: dict) -> None:
    """Every MLP replaced at once (interp.analysis.replacement_evals): writes replacement_metrics.json."""
    import torch

    from interp.analysis.replacement_evals import evaluate_replacement
    from interp.config import write_atomic_text
    from interp.data.tokens import take_contexts
    from interp.model import load_model

    if (folder / "clt.json").is_file():
        from transcoders.clt import load_clt

        clt = load_clt(folder, args.device)
        transcoders, spec = clt.layer_transcoders(), args.model or clt.cfg.model
    else:
        from transcoders.sets import load_transcoder_set

        transcoders = load_transcoder_set(folder, device=args.device)
        spec = args.model or next(iter(transcoders.values())).cfg.model
    if spec not in models:
        models[spec] = load_model(spec, args.device, getattr(torch, args.dtype))
    tokens = take_contexts(models[spec], args.source, args.split, args.n_ctx, args.eval_contexts, text_column=args.text_column)
    metrics = evaluate_replacement(models[spec], transcoders, tokens)
    write_atomic_text(folder / "replacement_metrics.json", json.dumps(metrics, indent=2))
    print(f"{folder}: {json.dumps({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})}")
