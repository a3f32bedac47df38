"""`interp circuit`: an attribution graph for a prompt, as an HTML report and JSON."""

from __future__ import annotations

HELP = "attribution graph of a prompt through transcoders: HTML report + JSON"
DESCRIPTION = ("Build the attribution graph of the prompt's next-token prediction on the local replacement model "
               "(one transcoder per layer, attention and norms frozen), prune it by influence on the top logits, and "
               "write a self-contained HTML report (clickable graph, top contexts, logit attributions, replacement and "
               "completeness scores) and the graph as JSON (schema interp.attribution-graph/1).")


def add_arguments(p) -> None:
    p.add_argument("--prompt", required=True, help="the text whose next token is explained")
    p.add_argument("--target", default=None, help="a token to include among the logits (one token, e.g. ' Paris')")
    p.add_argument("--transcoders", required=True, help="a transcoder set: folder of layer_<L>/ run folders, a circuit-tracer "
                   "YAML (or its folder), a sparsify release; local or owner/repo[:sub/folder] on the hub")
    p.add_argument("--out", required=True, help="the HTML report to write")
    p.add_argument("--json", default=None, help="where to write the graph JSON (default: OUT with .json)")
    p.add_argument("--neuronpedia-json", default=None, help="also write the graph in circuit-tracer's / Neuronpedia's JSON here")
    p.add_argument("--model", default=None, help="model spec (default: the one recorded by the transcoders)")
    p.add_argument("--max-features", type=int, default=1024, help="feature nodes expanded, most influential first")
    p.add_argument("--batch-size", type=int, default=64, help="targets per batched backward pass")
    p.add_argument("--max-logits", type=int, default=10)
    p.add_argument("--logit-probability", type=float, default=0.95, help="cumulative probability of the logits kept")
    p.add_argument("--node-threshold", type=float, default=0.8, help="cumulative influence kept by node pruning")
    p.add_argument("--edge-threshold", type=float, default=0.98, help="cumulative influence kept by edge pruning")
    p.add_argument("--contexts", type=int, default=32, help="corpus contexts searched for top activations (0: none)")
    p.add_argument("--source", default="shakespeare", help="text for top contexts (as for `interp train`)")
    p.add_argument("--n-ctx", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--validate", type=int, default=16, help="ablate the N most influential feature nodes in the real "
                   "model and compare with the graph's predictions, in the report and JSON (0: skip)")


def run(args) -> int:
    from pathlib import Path

    from interp.circuits import attribute, write_report
    from interp.data.tokens import take_contexts
    from interp.model import load_model
    from interp.io import check_compatible
    from transcoders.sets import load_transcoder_set  # every set format, and cross-layer transcoders' per-layer views

    transcoders = load_transcoder_set(args.transcoders, device=args.device)
    spec = args.model or next(iter(transcoders.values())).cfg.model
    if not spec:
        raise ValueError(f"{args.transcoders}: the transcoders record no model; pass --model.")
    model = load_model(spec, args.device)  # LocalReplacement checks there is a transcoder per layer
    for tc in transcoders.values():
        check_compatible(tc, model)
    graph = attribute(model, transcoders, args.prompt, args.target, max_logits=args.max_logits,
                      logit_probability=args.logit_probability, max_feature_nodes=args.max_features,
                      batch_size=args.batch_size, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    graph.meta["transcoders"] = str(Path(args.transcoders).resolve()) if Path(args.transcoders).exists() else args.transcoders
    if args.validate:
        from interp.circuits.validation import summary, validate

        graph.validation = validate(model, transcoders, graph, n_nodes=args.validate)
        print(summary(graph.validation))
    out = Path(args.out)
    json_path = Path(args.json) if args.json else out.with_suffix(".json")
    graph.save_json(json_path)
    if args.neuronpedia_json:
        from interp.circuits.neuronpedia import save_neuronpedia

        save_neuronpedia(graph, args.neuronpedia_json, scan=None, transcoder_list=[f"{spec}/{args.transcoders}/{layer}" for layer in transcoders])
    corpus = take_contexts(model, args.source, "train", args.n_ctx, args.contexts) if args.contexts else None
    write_report(model, transcoders, graph, out, corpus, progress=True)
    kept = int(graph.node_mask.sum())
    print(f"{len(graph.tokens)} tokens, {graph.meta['active_features']} active features, {kept} nodes kept in "
          f"{graph.meta['seconds']:.1f} s; replacement {graph.scores['replacement']:.3f}, "
          f"completeness {graph.scores['completeness']:.3f} -> {out}, {json_path}")
    return 0
