"""TopK vs gradient SAEs on the embedded model at k in {16, 32, 64}, equal width.

All six dictionaries train from one activation+gradient stream (TopK ignores the
gradient), so they see identical data. Prints a Markdown table and writes it to
experiments/results/gsae.md.

    python experiments/gsae_vs_topk.py --tokens 122880 --beta 1.0
"""

import argparse
import time
from pathlib import Path

import torch

import saes  # noqa: F401
from interp.activations import ActivationStore
from interp.data import take_contexts
from interp.dictionary import DictionaryConfig, architecture
from interp.evals import evaluate
from interp.model import load_model
from interp.steering import alive_latents, steering_effects
from interp.train import TrainConfig, train

HOOK = "blocks.6.hook_resid_post"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=122_880)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--ks", default="16,32,64")
    p.add_argument("--eval-contexts", type=int, default=32)
    p.add_argument("--steer-latents", type=int, default=32)
    p.add_argument("--out", default="runs/gsae_vs_topk")
    p.add_argument("--resume", action="store_true", help="reuse a finished or interrupted training in --out")
    args = p.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    model = load_model("embedded")
    store = ActivationStore(model, {"x": HOOK}, gradients={"grad": HOOK}, batch_size=args.batch_size,
                            block_contexts=128, forward_batch=16)
    base = DictionaryConfig(arch="topk", d_in=576, d_dict=4608, hook_in=HOOK, model="embedded", aux_k=288,
                            dead_tokens=args.tokens // 4)
    runs = [(arch, k, architecture(arch)(base.replace(arch=arch, k=k, beta=args.beta if arch == "gsae" else 0.0)))
            for k in ks for arch in ("topk", "gsae")]
    start = time.time()
    trained = train([d for *_, d in runs], store, TrainConfig(tokens=args.tokens, lr=1e-3), args.out, resume=args.resume)
    train_s = time.time() - start
    held = take_contexts(model, "shakespeare", "validation", 128, args.eval_contexts)
    steer_tokens = held[:2, :64]
    rows = []
    for (arch, k, _), d in zip(runs, trained):
        m, density = evaluate(model, d, held)
        effect = steering_effects(model, d, steer_tokens, alive_latents(density, args.steer_latents))
        print(arch, k, m["ce_loss_spliced"], m["fvu"], effect.mean().item(), flush=True)
        rows.append({"arch": arch, "k": k, "ce_spliced": m["ce_loss_spliced"], "ce_clean": m["ce_loss_clean"],
                     "ce_recovered": m["ce_recovered"], "kl": m["kl_spliced"], "fvu": m["fvu"], "l0": m["l0"],
                     "dead": m["dead_fraction"], "steering_kl": effect.mean().item()})
    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    body = "".join("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()) + " |\n" for r in rows)
    text = (f"TopK vs g-SAE (beta={args.beta}) on SmolLM2-135M {HOOK}, width 4608, {args.tokens} training tokens "
            f"(batch {args.batch_size}, lr 1e-3), {held.numel() - len(held)} held-out tokens; training+harvest {train_s:.0f} s.\n\n"
            + head + body)
    print(text)
    Path("experiments/results").mkdir(parents=True, exist_ok=True)
    Path(f"experiments/results/gsae_beta{args.beta:g}.md").write_text(text)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
