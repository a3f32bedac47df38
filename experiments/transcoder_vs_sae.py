"""Transcoders vs SAEs at equal L0 on the embedded model (Dunefsky et al. report
them on par): at each chosen layer, a TopK transcoder (MLP input -> MLP output)
and a TopK SAE on the MLP output (hook_mlp_out), same k, width, tokens and data
(one activation stream), both spliced in place of the MLP's output.

    python experiments/transcoder_vs_sae.py --layers 6,15,24 --tokens 204800
"""

import argparse
import time
from pathlib import Path

import saes  # noqa: F401
from interp.data.activations import ActivationStore
from interp.data.tokens import take_contexts
from interp.dictionary import DictionaryConfig, architecture
from interp.analysis.evals import evaluate
from interp.model import load_model
from interp.training.loop import TrainConfig, train
from transcoders import mlp_hooks, transcoder_config


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--layers", default="6,15,24")
    p.add_argument("--tokens", type=int, default=204_800)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--d-dict", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--eval-contexts", type=int, default=32)
    p.add_argument("--out", default="runs/transcoder-vs-sae")
    p.add_argument("--results", default="experiments/results/transcoder_vs_sae.md")
    args = p.parse_args()
    model = load_model()
    layers = [int(x) for x in args.layers.split(",")]
    d = model.cfg.d_model
    hooks = {f"{key}{layer}": name for layer in layers for key, name in mlp_hooks(layer).items()}
    store = ActivationStore(model, hooks, batch_size=args.batch_size, block_contexts=64)
    common = {"d_dict": args.d_dict, "k": args.k, "aux_k": d // 2, "dead_tokens": args.tokens // 10, "model": "embedded"}
    dictionaries, inputs, targets, names = [], [], [], []
    for layer in layers:
        tc = transcoder_config(d, layer, "topk", **common)
        sae = DictionaryConfig(arch="topk", d_in=d, hook_in=tc.hook_out, **common)
        dictionaries += [architecture("topk")(tc), architecture("topk")(sae)]
        inputs += [f"x{layer}", f"target{layer}"]
        targets += [f"target{layer}", f"target{layer}"]
        names += [f"transcoder L{layer}", f"SAE on mlp_out L{layer}"]
    start = time.perf_counter()
    trained = train(dictionaries, store, TrainConfig(tokens=args.tokens, checkpoint_every=50), args.out,
                    input_key=inputs, target_key=targets)
    seconds = time.perf_counter() - start
    held_out = take_contexts(model, "shakespeare", "validation", 128, args.eval_contexts)
    lines = [f"TopK transcoders vs TopK SAEs on hook_mlp_out, SmolLM2-135M, k={args.k}, width {args.d_dict}, "
             f"{args.tokens:,} training tokens from one shared stream (batch {args.batch_size}; {seconds:.0f} s for all), "
             f"evaluated on {args.eval_contexts} x 128 held-out tokens. Both replace the MLP's output when spliced.", "",
             "| dictionary | l0 | fvu (of mlp_out) | ce_spliced | ce_clean | ce_recovered | kl | dead |",
             "|---|---|---|---|---|---|---|---|"]
    for name, dictionary in zip(names, trained):
        m, _ = evaluate(model, dictionary, held_out)
        lines.append(f"| {name} | {m['l0']:.1f} | {m['fvu']:.3f} | {m['ce_loss_spliced']:.4f} | {m['ce_loss_clean']:.4f} | "
                     f"{m['ce_recovered']:.3f} | {m['kl_spliced']:.4f} | {m['dead_fraction']:.3f} |")
    Path(args.results).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
