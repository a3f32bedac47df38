"""Matryoshka BatchTopK vs BatchTopK at equal L0 on the embedded model: FVU, spliced CE,
and a first-letter absorption proxy.

Absorption proxy (simpler than Chanin et al. 2024's probe-based measure, documented
here): on held-out text, take the tokens that are a lowercase word after a space
(" ring", " gave"); for each first letter with enough such tokens, find the latent
whose firing best predicts "this token starts with that letter" (best F1), and
report its F1 and recall averaged over letters. Absorption shows as a general
first-letter latent that stays silent on some of its words (a token-specific latent
absorbed them): lower recall of the best latent. Also reported: the latent's index
(Matryoshka should keep such general features in its first prefix).

    nice -n 10 python experiments/matryoshka_vs_batchtopk.py --tokens 204800
"""

import argparse
import json
from pathlib import Path

import torch

import saes  # noqa: F401
from interp.analysis.evals import evaluate
from interp.data.activations import ActivationStore
from interp.data.tokens import take_contexts, token_mask
from interp.dictionary import DictionaryConfig, architecture
from interp.model import decode_tokens, load_model
from interp.training.loop import TrainConfig, train

HOOK = "blocks.6.hook_resid_post"
MIN_TOKENS = 25


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=204_800)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--d-dict", type=int, default=2304)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--prefixes", default="128,512,1152")
    p.add_argument("--eval-contexts", type=int, default=32)
    p.add_argument("--probe-contexts", type=int, default=128)
    p.add_argument("--out", default="runs/matryoshka_vs_batchtopk")
    p.add_argument("--results", default="experiments/results/matryoshka_vs_batchtopk.md")
    args = p.parse_args()
    model = load_model("embedded")
    prefixes = [int(w) for w in args.prefixes.split(",")] + [args.d_dict]
    base = DictionaryConfig(arch="batchtopk", d_in=model.cfg.d_model, d_dict=args.d_dict, k=args.k, hook_in=HOOK,
                            model="embedded", aux_k=model.cfg.d_model // 2, dead_tokens=max(args.batch_size, args.tokens // 10))
    members = {"batchtopk": architecture("batchtopk")(base),
               "matryoshka": architecture("matryoshka")(base.replace(arch="matryoshka", prefixes=prefixes))}
    store = ActivationStore(model, {"x": HOOK}, batch_size=args.batch_size, block_contexts=64)
    trained = dict(zip(members, train(list(members.values()), store, TrainConfig(tokens=args.tokens, checkpoint_every=10**9),
                                      args.out)))
    eval_tokens = take_contexts(model, "shakespeare", "validation", 128, args.eval_contexts)
    probe_tokens = take_contexts(model, "shakespeare", "validation", 128, args.probe_contexts, skip=args.eval_contexts)
    rows = {}
    for name, sae in trained.items():
        metrics, density = evaluate(model, sae, eval_tokens)
        rows[name] = {**metrics, **first_letter(model, sae, probe_tokens), "prefix_fvu": prefix_fvu(model, sae, eval_tokens, prefixes)}
        print(name, json.dumps(rows[name]))
    write_table(rows, args, prefixes)


@torch.no_grad()
def activations(model, tokens):
    acts, ids = [], []
    for chunk in tokens.split(8):
        _, cache = model.run_with_cache(chunk, names_filter=[HOOK], stop_at_layer=7)
        mask = token_mask(model, chunk)
        acts.append(cache[HOOK][mask])
        ids.append(chunk[mask])
    return torch.cat(acts), torch.cat(ids)


@torch.no_grad()
def prefix_fvu(model, sae, tokens, prefixes) -> dict[int, float]:
    """FVU of the reconstruction from the first m latents only, for each prefix width m."""
    x, _ = activations(model, tokens)
    codes, var = sae.encode(x), (x - x.mean(0)).pow(2).sum().item()
    return {m: ((codes[:, :m] @ sae.W_dec[:m] + sae.b_dec - x).pow(2).sum().item() / var) for m in prefixes}


@torch.no_grad()
def first_letter(model, sae, tokens) -> dict:
    x, ids = activations(model, tokens)
    strings = decode_tokens(model, ids.tolist())
    words = torch.tensor([s.startswith(" ") and s[1:].isalpha() and s[1:].islower() for s in strings])
    letters = [s[1] if w else "" for s, w in zip(strings, words.tolist())]
    fires = (sae.encode(x) != 0)[words].float()  # [n_words, d_dict]
    letters = [c for c in letters if c]
    per_letter = {}
    for letter in sorted(set(letters)):
        is_letter = torch.tensor([c == letter for c in letters]).float()
        if is_letter.sum() < MIN_TOKENS:
            continue
        tp = is_letter @ fires
        precision = tp / fires.sum(0).clamp_min(1)
        recall = tp / is_letter.sum()
        f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
        best = int(f1.argmax())
        per_letter[letter] = {"latent": best, "f1": f1[best].item(), "recall": recall[best].item(), "n": int(is_letter.sum())}
    n = max(1, len(per_letter))
    return {"letters": len(per_letter), "first_letter_f1": sum(v["f1"] for v in per_letter.values()) / n,
            "first_letter_recall": sum(v["recall"] for v in per_letter.values()) / n,
            "best_latent_median_index": sorted(v["latent"] for v in per_letter.values())[len(per_letter) // 2] if per_letter else -1,
            "per_letter": per_letter}


def write_table(rows, args, prefixes):
    lines = ["# Matryoshka BatchTopK vs BatchTopK on SmolLM2-135M, " + HOOK, "",
             f"Budget: {args.tokens:,} training tokens (batch {args.batch_size}), both trained on the same batches from one "
             f"model pass by the shared loop, width {args.d_dict}, k={args.k} (BatchTopK in training, the global threshold at "
             f"inference), AuxK {288} on both; Matryoshka prefixes {prefixes}. Evaluation on {args.eval_contexts} x 128 held-out "
             f"tokens; first-letter proxy on {args.probe_contexts} x 128 further held-out tokens (see the script's docstring: "
             f"best single latent per first letter, letters with at least {MIN_TOKENS} lowercase word tokens). 2 shared CPU cores.",
             "", "| | L0 | FVU | CE spliced | CE clean | CE recovered | KL | first-letter F1 | first-letter recall | "
             "median index of best latent | " + " | ".join(f"FVU first {m}" for m in prefixes[:-1]) + " |",
             "|---|" + "---|" * (9 + len(prefixes) - 1)]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['l0']:.1f} | {r['fvu']:.3f} | {r['ce_loss_spliced']:.3f} | {r['ce_loss_clean']:.3f} | "
                     f"{r['ce_recovered']:.3f} | {r['kl_spliced']:.3f} | {r['first_letter_f1']:.3f} | {r['first_letter_recall']:.3f} | "
                     f"{r['best_latent_median_index']} | " + " | ".join(f"{r['prefix_fvu'][m]:.3f}" for m in prefixes[:-1]) + " |")
    Path(args.results).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
