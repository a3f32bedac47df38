"""Why the calibrated global threshold fails at small k: the per-token L0 it gives.

Reads the dictionaries trained by experiments/gsae_vs_topk.py (its checkpoint),
calibrates each one's threshold as that script does, and reports on the same
held-out tokens the spread of L0 across tokens and where the squared error sits.

    python experiments/gsae_threshold_l0.py --out runs/gsae_vs_topk_sweep
"""

import argparse

import torch

import saes  # noqa: F401
from interp.data.activations import ActivationStore
from interp.training.checkpoint import load_checkpoint
from interp.config import from_dict
from interp.data.tokens import take_contexts, token_mask
from interp.dictionary import DictionaryConfig, architecture
from interp.model import hook_layer, load_model
from saes.gsae import calibrated_threshold, thresholded

HOOK = "blocks.6.hook_resid_post"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/gsae_vs_topk_sweep")
    p.add_argument("--eval-contexts", type=int, default=64)
    p.add_argument("--calib-contexts", type=int, default=64)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_model("embedded")
    state, tensors = load_checkpoint(args.out)
    store = ActivationStore(model, {"x": HOOK}, batch_size=state["batch_size"], block_contexts=128)
    scale = store.norm_scales()["x"]  # the scale training used (block 0 has the same x with or without gradients)

    def acts(skip, n):
        tokens = take_contexts(model, "shakespeare", "validation", 128, n, skip=skip)
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=[HOOK], stop_at_layer=hook_layer(HOOK) + 1)
        return cache[HOOK][token_mask(model, tokens)]

    held, calib = acts(0, args.eval_contexts), acts(args.eval_contexts, args.calib_contexts)
    norms = held.norm(dim=-1)
    centred_var = (held - held.mean(0)).pow(2).sum()
    print("| arch | beta | k | L0 median | L0 p90 | L0 p99 | L0 max | tokens with L0 > 4k | share of squared error on them | corr(L0, norm) | fvu |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for i, raw in enumerate(state["dictionaries"]):
        cfg = from_dict(DictionaryConfig, raw)
        d = architecture(cfg.arch)(cfg)
        d.load_state_dict({k[len(f"d{i}."):]: v for k, v in tensors.items() if k.startswith(f"d{i}.") and "since" not in k})
        d = d.exported(scale, scale)
        with torch.no_grad():
            t = thresholded(d, calibrated_threshold(d, calib))
            codes = t.encode(held)
            err = (t.decode(codes) - held).pow(2).sum(-1)
        l0 = (codes != 0).sum(-1).double()
        q = torch.quantile(l0, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
        many = l0 > 4 * cfg.k
        corr = torch.corrcoef(torch.stack([l0, norms.double()]))[0, 1]
        print(f"| {cfg.arch} | {cfg.beta:g} | {cfg.k} | {q[0]:.0f} | {q[1]:.0f} | {q[2]:.0f} | {l0.max():.0f} | "
              f"{many.double().mean():.2%} | {err[many].sum() / err.sum():.1%} | {corr:.2f} | {err.sum() / centred_var:.2f} |", flush=True)


if __name__ == "__main__":
    main()
