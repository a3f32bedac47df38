"""Transcoders for every layer of the embedded model, then the attribution graph
of one prompt: how long training takes, how good each layer's transcoder is,
and how long a graph for a ~16-token prompt takes on CPU.

    python experiments/transcoder_circuit.py --tokens 204800 --out runs/transcoders-embedded
"""

import argparse
import json
import time
from pathlib import Path


import saes  # noqa: F401
from interp.circuits import attribute, write_report
from interp.circuits.graph import prompt_tokens
from interp.data.tokens import take_contexts
from interp.model import load_model
from interp.training.runs import read_metrics
from interp.training.loop import TrainConfig
from transcoders import load_transcoder_set, train_transcoder_set

PROMPT = "Then Romeo and Juliet went to the church, and Romeo gave a ring to"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=204_800)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--d-dict", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--out", default="runs/transcoders-embedded")
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--target", default=" Juliet")
    p.add_argument("--max-features", type=int, default=1024)
    p.add_argument("--eval-contexts", type=int, default=4, help="held-out contexts of 128 tokens per layer's metrics")
    p.add_argument("--results", default="experiments/results/transcoder_circuit.md")
    args = p.parse_args()
    model = load_model()
    out = Path(args.out)
    start = time.perf_counter()
    if not (out / f"layer_{model.cfg.n_layers - 1}" / "cfg.json").exists():
        eval_tokens = take_contexts(model, "shakespeare", "validation", 128, args.eval_contexts)
        train_transcoder_set(model, out, TrainConfig(tokens=args.tokens, checkpoint_every=50), eval_tokens,
                             batch_size=args.batch_size, d_dict=args.d_dict, k=args.k)
    train_seconds = time.perf_counter() - start
    transcoders = load_transcoder_set(out, model.cfg.n_layers)
    metrics = [read_metrics(out / f"layer_{layer}") for layer in range(model.cfg.n_layers)]
    n_tokens = len(prompt_tokens(model, args.prompt))
    start = time.perf_counter()
    graph = attribute(model, transcoders, args.prompt, args.target, max_feature_nodes=args.max_features)
    graph_seconds = time.perf_counter() - start
    graph.save_json(out / "circuit.json")
    start = time.perf_counter()
    corpus = take_contexts(model, "shakespeare", "train", 128, 32)
    write_report(model, transcoders, graph, out / "circuit.html", corpus)
    report_seconds = time.perf_counter() - start
    kept = graph.node_mask
    lines = [f"Transcoders for all {model.cfg.n_layers} layers of SmolLM2-135M (TopK k={args.k}, width {args.d_dict}, "
             f"{args.tokens:,} training tokens each from one shared model pass, batch {args.batch_size}); training + "
             f"per-layer evaluation ({args.eval_contexts} x 128 held-out tokens) took {train_seconds:.0f} s on 2 CPU cores "
             "(shared with other jobs).", "",
             "| layer | fvu | ce_recovered | ce_spliced | ce_clean | l0 | dead |", "|---|---|---|---|---|---|---|"]
    for layer, m in enumerate(metrics):
        lines.append(f"| {layer} | {m['fvu']:.3f} | {m['ce_recovered']:.3f} | {m['ce_loss_spliced']:.3f} | {m['ce_loss_clean']:.3f} | "
                     f"{m['l0']:.1f} | {m['dead_fraction']:.3f} |")
    lines += ["", f"Attribution graph of {args.prompt!r} (target {args.target!r}, {n_tokens} tokens with BOS): "
              f"{graph.meta['active_features']} active features, {args.max_features} expanded, graph built in "
              f"{graph_seconds:.1f} s; {int(kept[:graph.n_features].sum())} feature nodes and {int(graph.edge_mask.sum())} "
              f"edges kept; replacement score {graph.scores['replacement']:.3f}, completeness {graph.scores['completeness']:.3f}. "
              f"Report (with top contexts from 32 x 128 corpus tokens) written in {report_seconds:.1f} s.",
              "", "Top logits: " + ", ".join(f"{t!r} {p:.3f}" for t, p in zip(graph.logit_strings, graph.logit_probabilities.tolist()))]
    Path(args.results).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(graph.meta))


if __name__ == "__main__":
    main()
