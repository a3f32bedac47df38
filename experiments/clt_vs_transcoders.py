"""Per-layer transcoders vs skip transcoders vs a cross-layer transcoder (CLT) on the
embedded model, at an equal training budget (the same batches from one model pass,
the same steps, lr and init) and equal mean L0 (TopK, the same k per layer):
all-layers-replaced CE and KL, per-layer FVU, and the replacement and completeness
scores of the Romeo attribution graph.

    nice -n 10 python experiments/clt_vs_transcoders.py --tokens 40960 --d-dict 512 --k 16
"""

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

import saes  # noqa: F401
from interp.analysis.replacement_evals import evaluate_replacement
from interp.circuits import attribute
from interp.data.activations import ActivationStore
from interp.data.tokens import take_contexts
from interp.dictionary import architecture
from interp.model import load_model
from interp.training.loop import TrainConfig, Trainee
from transcoders.clt import CLTConfig, CrossLayerTranscoder
from transcoders.clt_train import _step as clt_step, clt_hooks, exported, init_from_data, stacked_batch
from transcoders.config import transcoder_config

PROMPT = "Then Romeo and Juliet went to the church, and Romeo gave a ring to"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=40_960)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--d-dict", type=int, default=512)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--block-contexts", type=int, default=32, help="contexts of 128 tokens harvested per block")
    p.add_argument("--eval-contexts", type=int, default=8)
    p.add_argument("--max-features", type=int, default=512)
    p.add_argument("--out", default="runs/clt_vs_transcoders")
    p.add_argument("--results", default="experiments/results/clt_vs_transcoders.md")
    args = p.parse_args()
    model = load_model("embedded")
    L, d = model.cfg.n_layers, model.cfg.d_model
    cfg = TrainConfig(tokens=args.tokens, lr=args.lr, checkpoint_every=10**9)
    store = ActivationStore(model, clt_hooks(L), batch_size=args.batch_size, block_contexts=args.block_contexts, seed=cfg.seed)
    sets, times = train_all(model, store, cfg, args, L, d)
    eval_tokens = take_contexts(model, "shakespeare", "validation", 128, args.eval_contexts)
    rows = {}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name, tcs in sets.items():
        start = time.perf_counter()
        metrics = evaluate_replacement(model, tcs, eval_tokens)
        graph = attribute(model, tcs, PROMPT, " Juliet", max_feature_nodes=args.max_features)
        graph.save_json(Path(args.out) / f"{name}_romeo.json")
        rows[name] = {**metrics, "replacement_score": graph.scores["replacement"], "completeness": graph.scores["completeness"],
                      "active_features": graph.meta["active_features"], "train_seconds": times[name],
                      "eval_seconds": time.perf_counter() - start}
        print(name, json.dumps({k: v for k, v in rows[name].items() if k != "fvu_per_layer"}))
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    write_table(rows, args, L)


def train_all(model, store, cfg, args, L, d):
    """Per-layer, skip and CLT trained on the same batches (one model pass for all three)."""
    def tc(layer, skip):
        return architecture("topk")(transcoder_config(d, layer, "topk", skip=skip, d_dict=args.d_dict, k=args.k,
                                                           aux_k=0, dead_tokens=10**9, model="embedded"))

    plain, skip = [tc(l, False) for l in range(L)], [tc(l, True) for l in range(L)]
    clt = CrossLayerTranscoder(CLTConfig(n_layers=L, d_model=d, d_dict=args.d_dict, k=args.k, model="embedded"))
    scales = store.norm_scales()
    sample = store.block_rows(0)
    x0, y0 = stacked_batch(sample, "x", L, scales), stacked_batch(sample, "target", L, scales)
    for l, (a, b) in enumerate(zip(plain, skip)):
        for t in (a, b):
            t.init_from_data(x0[:, l], y0[:, l], torch.Generator().manual_seed(cfg.seed))
    init_from_data(clt, x0, y0, cfg.seed)
    trainees = [Trainee(t, cfg, data_parallel=False) for t in plain + skip]
    optimizer = torch.optim.Adam(clt.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    n_steps, times = cfg.steps(store.batch_size), {"per-layer": 0.0, "skip": 0.0, "clt": 0.0}
    stream = iter(store)
    for step in tqdm(range(n_steps), desc="train all three"):
        batch, lr = next(stream), cfg.lr_at(step, n_steps)
        x, y = stacked_batch(batch, "x", L, scales), stacked_batch(batch, "target", L, scales)
        for i, t in enumerate(trainees):
            start = time.perf_counter()
            t.step(x[:, i % L].contiguous(), y[:, i % L].contiguous(), {}, lr, cfg)
            times["per-layer" if i < L else "skip"] += time.perf_counter() - start
        start = time.perf_counter()
        clt_step(clt, optimizer, batch, scales, cfg, lr, False)
        times["clt"] += time.perf_counter() - start
    fold = lambda t, l: t.exported(scales[f"x{l}"], scales[f"target{l}"])
    sets = {"per-layer": {l: fold(t, l) for l, t in enumerate(plain)}, "skip": {l: fold(t, l) for l, t in enumerate(skip)},
            "clt": exported(clt, scales).layer_transcoders()}
    return sets, times


def write_table(rows, args, L):
    lines = [f"# Per-layer vs skip transcoders vs a cross-layer transcoder on SmolLM2-135M (all {L} layers)", "",
             f"Budget: {args.tokens:,} training tokens from one shared model pass (batch {args.batch_size}, "
             f"{args.tokens // args.batch_size} steps, lr {args.lr}, the same batches and the same per-layer init for all three), "
             f"TopK k={args.k} per layer and token (equal mean L0: {args.k} per layer), {args.d_dict} latents per layer, no AuxK "
             f"(the CLT has none). Evaluation on {args.eval_contexts} x 128 held-out tokens with every MLP replaced at once "
             f"(no error terms); Romeo graph ({PROMPT!r} -> ' Juliet') with {args.max_features} features expanded. "
             "2 shared CPU cores; `nice -n 10 python experiments/clt_vs_transcoders.py`.", "",
             "| | CE replaced | CE clean | CE zero-abl. | CE recovered | KL | mean FVU | replacement | completeness | train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['ce_loss_replaced']:.3f} | {r['ce_loss_clean']:.3f} | {r['ce_loss_zero_ablation']:.3f} | "
                     f"{r['ce_recovered']:.3f} | {r['kl_replaced']:.3f} | {r['fvu_mean']:.3f} | {r['replacement_score']:.3f} | "
                     f"{r['completeness']:.3f} | {r['train_seconds']:.0f} |")
    lines += ["", "Per-layer FVU (MLP output reconstructed from the clean MLP inputs; for the CLT the sum of every earlier "
              "layer's writes):", "", "| layer | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for layer in range(L):
        lines.append(f"| {layer} | " + " | ".join(f"{r['fvu_per_layer'][layer]:.3f}" for r in rows.values()) + " |")
    Path(args.results).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
