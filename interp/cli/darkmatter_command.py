"""`interp darkmatter`: decompose saved SAEs' errors into linear and nonlinear parts and write an HTML report."""

from __future__ import annotations

import json
from pathlib import Path

from interp.cli import add_source_arguments

HELP = "decompose SAE errors into linear and nonlinear dark matter (HTML report)"
DESCRIPTION = ("For SAEs on one hook (e.g. a width sweep), fit the linear prediction of each SAE's error from x on "
               "training text and measure on held-out text: error variance and norm explained, per-token norm "
               "prediction against baselines (token identity, loss, L0, ||x||), scaling across widths, and CE with "
               "SAE(x), SAE(x) + linear error, SAE(x) + nonlinear error spliced in. Optionally gradient pursuit and "
               "a linear map from the previous layer's SAE.")


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", help="run folders of SAEs on the same hook (e.g. a width sweep)")
    p.add_argument("--model", default=None, help="override the model recorded in cfg.json")
    p.add_argument("--train-contexts", type=int, default=128, help="contexts (training split) the linear maps are fit on")
    p.add_argument("--ce-contexts", type=int, default=16, help="held-out contexts for the CE table")
    p.add_argument("--intercept", action="store_true", help="fit e ~ a^T x + b instead of e ~ a^T x")
    p.add_argument("--ridge", type=float, default=0.0, help="ridge penalty for the linear fits (0: least squares)")
    p.add_argument("--no-loss-baseline", action="store_true", help="skip the per-token loss baseline (harvest stops at the hook: faster)")
    p.add_argument("--pursuit-tokens", type=int, default=0, help="also compare gradient pursuit at the SAE's L0 on this many tokens (slow)")
    p.add_argument("--previous", default=None, help="run folder of an SAE on an earlier hook: how much nonlinear error its output explains")
    p.add_argument("--out", default="darkmatter.html", help="HTML report path")
    p.add_argument("--json", default=None, help="also write the tables as JSON here")
    add_source_arguments(p)


def _load_saes(runs: list[str], device: str) -> dict:
    from interp.io import load_dictionary

    saes = {}
    for run in runs:
        name = Path(run).name if Path(run).name not in saes else str(run)
        saes[name] = load_dictionary(run, device=device)
    first = next(iter(saes.values())).cfg
    for name, d in saes.items():
        if (d.cfg.hook_in, d.cfg.hook_out, d.cfg.d_in) != (first.hook_in, first.hook_in, first.d_in):
            raise ValueError(f"{name} reads {d.cfg.hook_in} and writes {d.cfg.hook_out}; every SAE must read and write "
                             f"{first.hook_in} (d_in {first.d_in}). Transcoders are not supported here.")
    return saes


def run(args) -> int:
    import torch

    from interp.analysis import darkmatter as dm
    from interp.data.tokens import take_contexts
    from interp.io import check_compatible, load_dictionary
    from interp.model import load_model
    from interp.viz.report import Report
    from interp.viz.darkmatter import add_darkmatter_section
    from interp.errors import at_least

    at_least(args, train_contexts=1, ce_contexts=1, ridge=0, pursuit_tokens=0)
    saes = _load_saes(args.runs, args.device)
    first = next(iter(saes.values())).cfg
    model = load_model(args.model or first.model, args.device, getattr(torch, args.dtype))
    hook = first.hook_in
    prev = load_dictionary(args.previous, device=args.device) if args.previous else None
    for d in [*saes.values(), *([prev] if prev else [])]:
        check_compatible(d, model)
    extra = [prev.cfg.hook_in] if prev else []
    with_loss = not args.no_loss_baseline
    train_tokens = take_contexts(model, args.source, "train", args.n_ctx, args.train_contexts, text_column=args.text_column)
    test_tokens = take_contexts(model, args.source, "validation", args.n_ctx, args.eval_contexts, text_column=args.text_column)
    train = dm.collect(model, hook, train_tokens, extra, with_loss)
    test = dm.collect(model, hook, test_tokens, extra, with_loss)
    if len(train) <= first.d_in and args.ridge == 0:
        print(f"warning: {len(train)} training tokens for a {first.d_in}-dim fit; the held-out R^2 will be poor. "
              "Raise --train-contexts or set --ridge.")

    fits = {n: dm.fit_linear_error(d, dm.chunks(train.x), args.intercept, args.ridge) for n, d in saes.items()}
    results: dict = {"scores": {}, "norms": {}, "ce": {}}
    for name, sae in saes.items():
        results["scores"][name] = dm.score_linear_error(sae, fits[name], dm.chunks(test.x))
        results["norms"][name] = dm.norm_prediction(sae, fits[name], train, test, args.ridge)
        results["ce"][name] = dm.ce_table(model, sae, fits[name], hook, test_tokens[: args.ce_contexts])
    if len(saes) > 1:
        results["scaling"] = dm.scaling(saes, fits, train, test)
    if args.pursuit_tokens:
        results["pursuit"] = _pursuit_rows(dm, saes, train, test, args)
    if prev is not None:
        z = {s: prev(r.extra[prev.cfg.hook_in].to(prev.W_dec.dtype)).detach().float() for s, r in (("train", train), ("test", test))}
        results["previous"] = [{"sae": n, "previous": Path(args.previous).name,
                                **dm.explain_nonlinear(d, fits[n], train.x, z["train"], test.x, z["test"], args.ridge)}
                               for n, d in saes.items()]

    report = Report(f"Dark matter of SAEs at {hook}")
    report.add_text(f"Model {model.spec}; {len(train)} training and {len(test)} held-out tokens from {args.source}; "
                    f"intercept={args.intercept}, ridge={args.ridge}.")
    add_darkmatter_section(report, results)
    print(f"report: {report.write(args.out)}")
    tables = _tables(results)
    if args.json:
        Path(args.json).write_text(json.dumps(tables, indent=2))
    for name, s in results["scores"].items():
        print(f"{name}: " + json.dumps({k: round(v, 4) for k, v in s.items()}))
    return 0


def _pursuit_rows(dm, saes, train, test, args) -> list[dict]:
    """SAE against gradient pursuit with its decoder at its own L0; each gets its own linear fit on the same
    4 x pursuit-tokens training rows (pursuit is slow, so fewer than the main fit)."""
    n = args.pursuit_tokens
    rows = []
    for name, sae in saes.items():
        for method, rec in (("SAE encoder", sae), ("gradient pursuit", dm.pursuit(sae))):
            fit = dm.fit_linear_error(rec, dm.chunks(train.x[: 4 * n]), args.intercept, args.ridge)
            rows.append({"sae": name, "method": method, **dm.score_linear_error(rec, fit, dm.chunks(test.x[:n]))})
    return rows


def _tables(results: dict) -> dict:
    """The JSON-able part of the results (per-token tensors dropped)."""
    out = dict(results)
    out["norms"] = {k: v["rows"] for k, v in results["norms"].items()}
    return out
