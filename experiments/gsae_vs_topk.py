"""TopK vs gradient SAEs on the embedded model at several k and beta, equal width,
with the g-SAE's inference modes side by side:

- topk:      plain TopK on the pre-activations (no gradient; the default)
- threshold: one global threshold, calibrated on held-out activations so that
             the mean L0 is k (`saes.gsae.calibrated_threshold`)
- oracle:    selection with the true loss gradient, as in training; it needs
             the tokens being predicted, so it is an upper bound, not a usable mode

All dictionaries train from one activation+gradient stream (TopK ignores the
gradient), so they see identical data. Every variant is spliced into the same
held-out contexts, so differences are paired: the table gives the spliced-CE
difference to TopK at the same k with a 2-standard-error interval over contexts.

    python experiments/gsae_vs_topk.py --tokens 122880 --betas 0.5,1,2
"""

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import saes  # noqa: F401
from interp.data.activations import ActivationStore
from interp.data.tokens import take_contexts, token_mask
from interp.dictionary import DictionaryConfig, architecture
from interp.analysis.evals import evaluate
from interp.data.gradients import activations_and_gradients
from interp.model import hook_layer, load_model
from interp.analysis.steering import alive_latents, steering_effects
from interp.training.loop import TrainConfig, train
from saes.gsae import calibrated_threshold, thresholded

HOOK = "blocks.6.hook_resid_post"


@torch.no_grad()
def measure(model, variants: dict, tokens: torch.Tensor, batch: int = 8) -> dict[str, dict]:
    """{name: (dictionary, oracle)} -> {name: metrics} on tokens [n, n_ctx], with the definitions of
    interp.analysis.evals.evaluate, but one clean, zero-ablation and gradient pass per batch for all variants,
    spliced runs starting after the hook's block, and per-context sums for paired errors."""
    start = hook_layer(HOOK) + 1
    need_grad = any(oracle for _, oracle in variants.values())
    out = {name: {"sq_err": 0.0, "l0": 0.0, "kl": 0.0, "fires": 0, "ctx_nll": []} for name in variants}
    shared = {"tokens": 0, "sq": 0.0, "sum_x": 0.0, "preds": 0, "ctx_n": [], "clean": [], "zero": []}
    for chunk in tqdm(tokens.split(batch), desc="measure", unit="batch"):
        mask, keep, targets = token_mask(model, chunk), token_mask(model, chunk[:, 1:]), chunk[:, 1:, None]
        clean, cache = model.run_with_cache(chunk, names_filter=[HOOK])
        x = cache[HOOK]
        grad = activations_and_gradients(model, chunk, [], [HOOK])[f"grad:{HOOK}"] if need_grad else None
        clean_lp = clean[:, :-1].double().log_softmax(-1)

        def nll(lp):  # per-context summed next-token loss over scored predictions
            return (-lp.gather(-1, targets)[..., 0] * keep).sum(-1)

        shared["clean"].append(nll(clean_lp))
        shared["zero"].append(nll(model(torch.where(mask[..., None], 0.0, x), start_at_layer=start)[:, :-1].double().log_softmax(-1)))
        shared["ctx_n"].append(keep.sum(-1))
        xs = x[mask].double()
        shared["tokens"] += len(xs)
        shared["sq"] += xs.pow(2).sum().item()
        shared["sum_x"] = shared["sum_x"] + xs.sum(0)
        shared["preds"] += keep.sum().item()
        for name, (d, oracle) in variants.items():
            codes = d.encode(x[mask], grad=grad[mask]) if oracle else d.encode(x[mask])
            recon = d.decode(codes)
            spliced_x = x.clone()
            spliced_x[mask] = recon.to(x.dtype)
            lp = model(spliced_x, start_at_layer=start)[:, :-1].double().log_softmax(-1)
            o = out[name]
            o["ctx_nll"].append(nll(lp))
            o["kl"] += (F.kl_div(lp, clean_lp, log_target=True, reduction="none").sum(-1) * keep).sum().item()
            o["sq_err"] += (recon.double() - xs).pow(2).sum().item()
            o["l0"] += (codes != 0).sum().item()
            o["fires"] = o["fires"] + (codes != 0).sum(0)
    n, preds = shared["tokens"], shared["preds"]
    ctx_n = torch.cat(shared["ctx_n"]).double()
    ce_clean, ce_zero = (torch.cat(shared[k]).sum().item() / preds for k in ("clean", "zero"))
    total_var = shared["sq"] - shared["sum_x"].pow(2).sum().item() / n
    results = {}
    for name, o in out.items():
        ctx_nll = torch.cat(o["ctx_nll"])
        ce = ctx_nll.sum().item() / preds
        results[name] = {"l0": o["l0"] / n, "ce_clean": ce_clean, "ce_zero": ce_zero, "ce_spliced": ce,
                         "ce_recovered": (ce_zero - ce) / (ce_zero - ce_clean), "kl": o["kl"] / preds,
                         "fvu": o["sq_err"] / total_var, "dead": (o["fires"] == 0).double().mean().item(),
                         "density": o["fires"].double() / n, "ctx_nll": ctx_nll, "ctx_n": ctx_n}
    return results


def paired_difference(a: dict, b: dict) -> tuple[float, float]:
    """Mean per-prediction CE of a minus b, and its standard error with contexts as clusters."""
    diff, n = a["ctx_nll"] - b["ctx_nll"], a["ctx_n"]
    mean = diff.sum().item() / n.sum().item()
    resid = diff - mean * n
    se = (len(n) / (len(n) - 1) * resid.pow(2).sum()).sqrt().item() / n.sum().item()
    return mean, se


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=122_880)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--betas", default="0.5,1,2")
    p.add_argument("--ks", default="16,32,64")
    p.add_argument("--eval-contexts", type=int, default=64)
    p.add_argument("--calib-contexts", type=int, default=64, help="held-out contexts after the evaluation ones")
    p.add_argument("--steer-latents", type=int, default=32)
    p.add_argument("--out", default="runs/gsae_vs_topk_sweep")
    p.add_argument("--results", default="experiments/results/gsae_vs_topk.md")
    p.add_argument("--block-contexts", type=int, default=128, help="contexts harvested (and shuffled) together")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="reuse a finished or interrupted training in --out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ks, betas = [int(k) for k in args.ks.split(",")], [float(b) for b in args.betas.split(",")]
    model = load_model("embedded")
    store = ActivationStore(model, {"x": HOOK}, gradients={"grad": HOOK}, batch_size=args.batch_size,
                            block_contexts=args.block_contexts, forward_batch=16)
    base = DictionaryConfig(arch="topk", d_in=576, d_dict=4608, hook_in=HOOK, model="embedded", aux_k=288,
                            dead_tokens=args.tokens // 4)
    runs = [(arch, beta, k) for k in ks for arch, beta in [("topk", 0.0)] + [("gsae", b) for b in betas]]
    dictionaries = [architecture(a)(base.replace(arch=a, k=k, beta=b)) for a, b, k in runs]
    start = time.time()
    trained = train(dictionaries, store, TrainConfig(tokens=args.tokens, lr=1e-3), args.out, resume=args.resume)
    train_s = time.time() - start
    print(f"trained in {train_s:.0f} s", flush=True)

    held = take_contexts(model, "shakespeare", "validation", 128, args.eval_contexts)
    calib = take_contexts(model, "shakespeare", "validation", 128, args.calib_contexts, skip=args.eval_contexts)
    with torch.no_grad():
        _, cache = model.run_with_cache(calib, names_filter=[HOOK], stop_at_layer=hook_layer(HOOK) + 1)
    calib_x = cache[HOOK][token_mask(model, calib)]
    variants, labels = {}, {}
    for (arch, beta, k), d in zip(runs, trained):
        theta = calibrated_threshold(d, calib_x)
        modes = {"topk": (d, False), "threshold": (thresholded(d, theta, f"{len(calib_x)} held-out tokens"), False)}
        if arch == "gsae":
            modes["oracle"] = (d, True)
        for mode, v in modes.items():
            name = f"{arch} b{beta:g} k{k} {mode}"
            variants[name], labels[name] = v, (arch, beta, k, mode, theta if mode == "threshold" else None)

    first = next(iter(variants))  # self-check: measure() agrees with the library's evaluate()
    lib, _ = evaluate(model, variants[first][0], held[:2])
    mine = measure(model, {first: variants[first]}, held[:2])[first]
    for key, ref in (("ce_spliced", "ce_loss_spliced"), ("kl", "kl_spliced"), ("fvu", "fvu"), ("l0", "l0")):
        assert abs(mine[key] - lib[ref]) < 1e-4 * max(1.0, abs(lib[ref])), (key, mine[key], lib[ref])

    start = time.time()
    results = measure(model, variants, held)
    eval_s = time.time() - start
    steer_tokens = held[:2, :64]
    rows = []
    for name, r in results.items():
        arch, beta, k, mode, theta = labels[name]
        delta, se = paired_difference(r, results[f"topk b0 k{k} topk"])
        steer = ""
        if mode == "topk":
            d = variants[name][0]
            steer = f"{steering_effects(model, d, steer_tokens, alive_latents(r['density'], args.steer_latents)).mean().item():.3f}"
        rows.append([arch, f"{beta:g}" if arch == "gsae" else "-", k, mode, f"{r['l0']:.1f}", f"{r['ce_spliced']:.4f}",
                     "-" if name.startswith("topk b0") and mode == "topk" else f"{delta:+.4f} ± {2 * se:.4f}",
                     f"{r['ce_recovered']:.4f}", f"{r['kl']:.4f}", f"{r['fvu']:.4f}", f"{r['dead']:.4f}", steer,
                     "" if theta is None else f"{theta:.3g}"])
        print(" | ".join(map(str, rows[-1])), flush=True)
    r0 = next(iter(results.values()))
    head = ["arch", "beta", "k", "inference", "l0", "ce_spliced", "Δce vs TopK (±2 SE)", "ce_recovered", "kl", "fvu",
            "dead", "steering_kl", "theta"]
    table = "| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n" + "".join(
        "| " + " | ".join(map(str, row)) + " |\n" for row in rows)
    text = (f"Setup: SmolLM2-135M (embedded) {HOOK}, width 4608, betas {args.betas}, k {args.ks}; {args.tokens} training "
            f"tokens of the shakespeare train split (batch {args.batch_size}, lr 1e-3, AuxK 288); "
            f"evaluation on {int(r0['ctx_n'].sum())} predictions of {len(held)} validation contexts of 128 tokens; "
            f"thresholds calibrated on {len(calib_x)} tokens of the next {len(calib)} validation contexts. "
            f"Clean CE {r0['ce_clean']:.4f}, zero-ablation CE {r0['ce_zero']:.4f}. Harvest+training {train_s:.0f} s, "
            f"evaluation {eval_s:.0f} s ({args.threads} thread(s)).\n\n" + table)
    print(text)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(text)


if __name__ == "__main__":
    main()
