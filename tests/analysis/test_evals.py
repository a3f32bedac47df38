import pytest
import torch
import torch.nn.functional as F

from helpers import random_dictionary
from interp.data.tokens import take_contexts
from interp.analysis.evals import evaluate, evaluate_many, evaluate_reference
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


# The fast path (shared prefix, suffix passes from start_at_layer, chunked float32 losses) against the
# three-full-pass float64 reference, for hooks before, inside and after blocks and for transcoders.
FAST_CASES = [
    ("blocks.0.hook_resid_post", "blocks.0.hook_resid_post", 32, 32, False),  # aliased to blocks.1.hook_resid_pre
    ("blocks.1.hook_resid_pre", "blocks.1.hook_resid_pre", 32, 32, False),
    ("blocks.1.hook_resid_post", "blocks.1.hook_resid_post", 32, 32, False),  # last block: no alias
    ("blocks.1.hook_mlp_out", "blocks.1.hook_mlp_out", 32, 32, False),
    ("blocks.0.attn.hook_z", "blocks.0.attn.hook_z", 32, 32, False),  # [batch, pos, n_heads, d_head]
    ("blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", 32, 32, True),  # skip transcoder
    ("blocks.0.hook_resid_mid", "blocks.1.hook_mlp_out", 32, 32, False),  # reads and writes in different blocks
    ("hook_embed", "hook_embed", 32, 32, False),  # in the embedding: full passes
    ("ln_final.hook_normalized", "ln_final.hook_normalized", 32, 32, False),  # after the blocks
]


def hooked_dictionary(arch, hook_in, hook_out, d_in, d_out, skip=False, seed=0):
    d = random_dictionary(arch, d_in=d_in, d_dict=64, seed=seed, dtype="float32", d_out=d_out, skip=skip,
                          hook_in=hook_in, hook_out=hook_out, subtract_b_dec=not skip)
    with torch.no_grad():
        for p in d.parameters():
            p.mul_(0.3)
    return d


def assert_close(fast, ref, tol=1e-5):
    (m, density), (m_ref, density_ref) = fast, ref
    assert m.keys() == m_ref.keys()
    for key in m:
        assert abs(m[key] - m_ref[key]) <= tol * max(1.0, abs(m_ref[key])), (key, m[key], m_ref[key])
    assert torch.equal(density, density_ref)


@pytest.mark.parametrize("hook_in, hook_out, d_in, d_out, skip", FAST_CASES)
def test_fast_path_matches_the_reference(tiny, hook_in, hook_out, d_in, d_out, skip):
    toks = tokens(tiny)
    d = hooked_dictionary("topk" if not skip else "relu", hook_in, hook_out, d_in, d_out, skip)
    fast = evaluate(tiny, d, toks, batch_size=4)
    assert_close(fast, evaluate_reference(tiny, d, toks, batch_size=4))
    assert fast[0]["kl_spliced"] > 1e-3 and fast[0]["ce_loss_zero_ablation"] != fast[0]["ce_loss_clean"]


def passes_matching_the_reference(tiny, dictionaries, toks, monkeypatch) -> list:
    """evaluate_many on one batch: the start_at_layer of every forward pass it ran, after checking each
    dictionary's metrics against the three-full-pass reference."""
    calls, forward = [], tiny.forward
    monkeypatch.setattr(tiny, "forward", lambda *a, **kw: calls.append(kw.get("start_at_layer")) or forward(*a, **kw))
    results = evaluate_many(tiny, dictionaries, toks, batch_size=6)
    monkeypatch.undo()
    for d, result in zip(dictionaries, results):
        assert_close(result, evaluate_reference(tiny, d, toks, batch_size=6))
    return calls


def test_a_sweep_shares_passes_and_matches_each_member_alone(tiny, monkeypatch):
    toks = tokens(tiny)
    sweep = [hooked_dictionary("topk", "blocks.0.hook_resid_post", "blocks.0.hook_resid_post", 32, 32, seed=s)
             for s in range(3)] + [hooked_dictionary("relu", "blocks.1.hook_mlp_out", "blocks.1.hook_mlp_out", 32, 32)]
    # one batch: the prefix, then 1 clean + 2 zero-ablation (two hook_outs) + 4 spliced suffix passes
    assert passes_matching_the_reference(tiny, sweep, toks, monkeypatch) == [0, 1, 1, 1, 1, 1, 1, 1]
    assert evaluate_many(tiny, [], toks) == []


def test_a_transcoder_set_resumes_each_member_at_its_own_block(tiny, monkeypatch):
    """Members at different blocks: the clean pass starts at the earliest, each member's zero-ablated and
    spliced passes at its own block (from the residual the clean pass recorded there); an SAE after the
    blocks resumes at ln_final. Each member's metrics equal the three-full-pass reference."""
    toks = tokens(tiny)
    members = [hooked_dictionary("topk", f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out",
                                 32, 32, seed=layer) for layer in (1, 0)]
    members.append(hooked_dictionary("topk", "ln_final.hook_normalized", "ln_final.hook_normalized", 32, 32))
    # one batch: the prefix (none before block 0), the clean pass, 3 zero-ablated passes, 3 spliced passes
    assert passes_matching_the_reference(tiny, members, toks, monkeypatch) == [0, 0, 1, 0, 2, 1, 0, 2]


def test_zero_ablation_of_the_residual_is_shared_by_contexts_that_start_with_bos(tiny, monkeypatch):
    """Contexts whose only BOS is their first token enter the suffix as the same zeroed residual, so their
    zero-ablated logits are computed once for the whole evaluation; a context with a BOS mid-context or none
    first runs its own pass. Either way the metrics equal the three-full-pass reference."""
    from interp.model import bos_token_id

    toks = tokens(tiny)
    toks[1, 9] = bos_token_id(tiny)  # a document boundary inside context 1
    toks[4, 0] = toks[4, 1]  # context 4 does not start with BOS
    d = hooked_dictionary("topk", "blocks.0.hook_resid_post", "blocks.0.hook_resid_post", 32, 32)
    batches = []
    forward = tiny.forward
    monkeypatch.setattr(tiny, "forward", lambda x, **kw: batches.append((kw.get("start_at_layer"), len(x))) or forward(x, **kw))
    fast = evaluate(tiny, d, toks, batch_size=3)
    monkeypatch.undo()
    # per batch of 3: the prefix, the clean pass, the zero-ablated pass(es), the spliced pass
    assert batches == [(0, 3), (1, 3), (1, 1), (1, 1), (1, 3),  # the shared context (once), then context 1 alone
                       (0, 3), (1, 3), (1, 1), (1, 3)]  # context 4 alone; 3 and 5 reuse the shared log-probs
    assert_close(fast, evaluate_reference(tiny, d, toks, batch_size=3))
