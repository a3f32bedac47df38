import torch
import torch.nn.functional as F

from helpers import random_dictionary
from interp.data.tokens import take_contexts
from interp.analysis.evals import evaluate
from test_dictionary import identity_dictionary

HOOK = "blocks.1.hook_resid_mid"


def tokens(tiny):
    return take_contexts(tiny, "shakespeare", "validation", 32, 6)


def float_dictionary(d, hook=HOOK):
    d = d.to(torch.float32)
    d.cfg = d.cfg.replace(hook_in=hook, hook_out=hook, dtype="float32")
    return d


def test_identity_dictionary_is_perfect(tiny):
    d = float_dictionary(identity_dictionary("topk", d=32))
    m, density = evaluate(tiny, d, tokens(tiny), batch_size=4)
    assert abs(m["fvu"]) < 1e-10 and abs(m["ce_loss_spliced"] - m["ce_loss_clean"]) < 1e-5
    assert abs(m["kl_spliced"]) < 1e-6 and abs(m["ce_recovered"] - 1) < 1e-4 and m["cos_sim"] > 0.99999
    assert m["eval_tokens"] == 6 * 31 and density.shape == (64,)


def test_metrics_match_a_slow_reference(tiny):
    d = float_dictionary(random_dictionary("relu", d_in=32, d_dict=64, seed=3))
    toks = tokens(tiny)
    m, density = evaluate(tiny, d, toks, batch_size=4)
    ce = {"clean": [], "spliced": [], "zero": []}
    errs, ys, l0 = [], [], []
    for ctx in toks:  # one context at a time, positions one by one
        def replace(fn):
            def hook(act, hook):
                out = act.clone()
                for p in range(1, act.shape[1]):
                    out[0, p] = fn(act[0, p])
                return out
            return [(HOOK, hook)]
        runs = {"clean": tiny(ctx[None]), "spliced": tiny.run_with_hooks(ctx[None], fwd_hooks=replace(d)),
                "zero": tiny.run_with_hooks(ctx[None], fwd_hooks=replace(torch.zeros_like))}
        keep = ctx[1:] != 256
        for name, logits in runs.items():
            ce[name].append(F.cross_entropy(logits[0, :-1][keep].double(), ctx[1:][keep], reduction="none"))
        _, cache = tiny.run_with_cache(ctx[None])
        y = cache[HOOK][0, 1:].double()
        ys.append(y)
        errs.append((d(y.float()).double() - y).pow(2).sum(-1))
        l0.append((d.encode(y.float()) != 0).sum(-1).double())
    ce = {k: torch.cat(v).mean().item() for k, v in ce.items()}
    y = torch.cat(ys)
    fvu = torch.cat(errs).sum() / (y - y.mean(0)).pow(2).sum()
    assert abs(m["ce_loss_clean"] - ce["clean"]) < 1e-5
    assert abs(m["ce_loss_spliced"] - ce["spliced"]) < 1e-5
    assert abs(m["ce_loss_zero_ablation"] - ce["zero"]) < 1e-5
    assert abs(m["fvu"] - fvu.item()) < 1e-5 * max(1, fvu.item())
    assert abs(m["l0"] - torch.cat(l0).mean().item()) < 1e-9
