"""`interp lib`: build the local interaction basis of a model, save it, and write ablation curves and a report."""

from __future__ import annotations

import json

from interp.cli import add_source_arguments

HELP = "build the local interaction basis (LIB) and compare it with PCA on ablation curves"
DESCRIPTION = ("Build LIB bases (and PCA / neuron baselines) at node layers of a model, from the output backwards; "
               "writes bases.safetensors, lib.json, summary.json and report.html. --model is a model spec "
               "(embedded, tiny, ...) or modadd:FOLDER for a model trained by `python -m interp.analysis.toy_models modadd`.")
DEFAULT_NODES = "blocks.26.hook_resid_pre,blocks.28.hook_resid_pre,logits"
MODADD_NODES = "blocks.0.hook_resid_pre,blocks.0.hook_resid_mid,blocks.0.mlp.hook_post,blocks.0.hook_resid_post,logits"


def add_arguments(p) -> None:
    p.add_argument("--model", default="embedded", help="a model spec (see `interp train --help`) or modadd:FOLDER")
    p.add_argument("--nodes", default=None, help=f"comma-separated node layers ending in logits (default {DEFAULT_NODES}; "
                   "modadd: all five)")
    p.add_argument("--contexts", type=int, default=16, help="contexts (LM) or pairs (modadd) for the build")
    p.add_argument("--sources", type=int, default=8, help="random +-1 sources per batch for the Jacobian Gram (0 = exact)")
    p.add_argument("--ig-steps", type=int, default=1, help="integrated-gradient points (1 = plain gradient)")
    p.add_argument("--no-center", action="store_true", help="do not centre the activations")
    p.add_argument("--no-edges", action="store_true", help="skip edges and edge ablations")
    p.add_argument("--batch-size", type=int, default=8, help="contexts (or pairs) per batch")
    p.add_argument("--points", type=int, default=16, help="points per ablation curve")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/lib", help="output folder")
    add_source_arguments(p)


def run(args) -> int:
    import torch

    from interp.analysis.interaction import LibConfig, ablation_summary, build_lib, save_result
    from interp.viz.interaction import lib_report

    chain, build, held_out = _chain_and_batches(args)
    cfg = LibConfig(center=not args.no_center, sources=args.sources, ig_steps=args.ig_steps, edges=not args.no_edges, seed=args.seed)
    torch.manual_seed(args.seed)
    result = build_lib(chain, build, cfg)
    out = save_result(result, args.out)
    summary = ablation_summary(chain, result, held_out, points=args.points, edges=not args.no_edges)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lib_report(result, summary, f"Interaction basis of {args.model}").write(out / "report.html")
    for node, kinds in summary["directions"].items():
        print(node, {k: (v["dims"], v["n_for_accuracy"], v["n_for_loss"]) for k, v in kinds.items()})
    for name, info in summary["edges"].items():
        print(name, f"{info['n_for_loss']} of {info['total']} edges keep the loss within 1e-3")
    print(f"{out}: build {result.seconds['total']:.1f} s")
    return 0


def _chain_and_batches(args):
    import torch

    from interp.analysis.interaction_models import transformer_chain

    if args.model.startswith("modadd:"):
        from interp.analysis.toy_models import load_modadd, modadd_data

        model, cfg = load_modadd(args.model.partition(":")[2])
        data = modadd_data(cfg)
        chain = transformer_chain(model, (args.nodes or MODADD_NODES).split(","), last_only=True, skip_bos=False)
        n_eval = max(args.eval_contexts, 1)
        build = _split({"tokens": data["train_tokens"][: args.contexts], "labels": data["train_labels"][: args.contexts]}, args.batch_size)
        held = _split({"tokens": data["test_tokens"][:n_eval], "labels": data["test_labels"][:n_eval]}, max(args.batch_size, 500))
        return chain, build, held

    from interp.data.tokens import take_contexts
    from interp.model import load_model

    model = load_model(args.model, args.device, getattr(torch, args.dtype))
    chain = transformer_chain(model, (args.nodes or DEFAULT_NODES).split(","))
    tokens = take_contexts(model, args.source, "train", args.n_ctx, args.contexts, text_column=args.text_column)
    held = take_contexts(model, args.source, "validation", args.n_ctx, args.eval_contexts, text_column=args.text_column)
    return chain, _split({"tokens": tokens}, args.batch_size), _split({"tokens": held}, args.batch_size)


def _split(batch: dict, size: int) -> list[dict]:
    n = len(next(iter(batch.values())))
    return [{k: v[i:i + size] for k, v in batch.items()} for i in range(0, n, size)]


