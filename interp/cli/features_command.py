"""`interp features`: feature statistics and a static dashboard site for a run folder."""

from __future__ import annotations

from interp.cli import add_source_arguments

HELP = "feature dashboards: statistics pass + static HTML site"
DESCRIPTION = ("Run the model once over a text source, keep per-latent statistics (top and sampled contexts, histogram, "
               "density, logit effect, nearest latents), save them (stats/ as safetensors + JSON) and write a static, "
               "offline site: OUT/index.html with search, plotly.min.js written once beside it, one lazily loaded page per "
               "feature (index.html#f=<i>).")


def add_arguments(p) -> None:
    p.add_argument("run", help="run folder, or any dictionary source load_dictionary reads (owner/repo:sub/folder, ...)")
    p.add_argument("--out", required=True, help="site folder (index.html, plotly.min.js, data/, stats/)")
    p.add_argument("--model", default=None, help="override the model recorded in cfg.json")
    p.add_argument("--split", default="train")
    p.add_argument("--contexts", type=int, default=512, help="contexts to read (tokens = contexts x n_ctx)")
    p.add_argument("--batch-size", type=int, default=16, help="contexts per forward pass")
    p.add_argument("--top", type=int, default=20, help="top activating contexts kept per feature")
    p.add_argument("--features", type=int, default=0, help="write pages for the N densest features only (0: all)")
    add_source_arguments(p)


def run(args) -> int:
    from pathlib import Path

    from interp.errors import at_least, writable_folder

    import torch

    from interp.io import check_compatible, load_dictionary
    from interp.analysis.features import compute_feature_stats
    from interp.model import load_model
    from interp.viz.dashboard import write_site

    at_least(args, contexts=1, batch_size=1, top=1, features=0)
    writable_folder(args.out)
    d = load_dictionary(args.run, device=args.device)
    spec = args.model or d.cfg.model
    if not spec:
        raise ValueError(f"{args.run}/cfg.json records no model; pass --model.")
    model = load_model(spec, args.device, getattr(torch, args.dtype))
    check_compatible(d, model)
    stats = compute_feature_stats(model, d, args.source, args.split, args.n_ctx, args.contexts, args.batch_size,
                                  n_top=args.top)
    out = Path(args.out)
    stats.save(out / "stats")
    features = stats.density.argsort(descending=True)[: args.features].tolist() if args.features else None
    index = write_site(stats, out, features, title=f"Features of {Path(args.run).name}")
    print(f"{stats.meta['tokens_seen']} tokens, {stats.d_dict} features -> {index}")
    return 0
