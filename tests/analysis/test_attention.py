import torch

from helpers import random_dictionary
from interp.analysis.attention import head_attribution, source_attribution, top_heads
from interp.data.tokens import take_contexts

LAYER = 1
HOOK = f"blocks.{LAYER}.attn.hook_z"


def z_sae(tiny):
    d = random_dictionary("topk", d_in=32, d_dict=24, k=4, dtype="float64", seed=5)
    d.cfg = d.cfg.replace(hook_in=HOOK, hook_out=HOOK)
    return d


def test_head_and_source_terms_sum_to_the_pre_activation(tiny):
    d = z_sae(tiny)
    tokens = take_contexts(tiny, "shakespeare", "train", 16, 1)
    _, cache = tiny.run_with_cache(tokens)
    z = cache[HOOK][0].double()  # [pos, heads, d_head]
    pre = d.pre_acts(z.flatten(1))
    for latent in (0, 7, 23):
        contributions, bias = head_attribution(d, z, latent)
        assert torch.allclose(contributions.sum(-1) + bias, pre[:, latent], atol=1e-10)
        pattern = cache[f"blocks.{LAYER}.attn.hook_pattern"][0].double()
        v = cache[f"blocks.{LAYER}.attn.hook_v"][0].double()
        for t in (0, 5, 15):
            terms = source_attribution(pattern, v, d, latent, t)
            assert terms.shape == (4, 16) and (terms[:, t + 1:] == 0).all()  # causal: no later sources
            assert torch.allclose(terms.sum() + bias, pre[t, latent], atol=1e-5)
            assert torch.allclose(terms.sum(-1), contributions[t], atol=1e-5)


def test_top_head_finds_the_only_head_a_latent_reads():
    d = random_dictionary("topk", d_in=8, d_dict=3, k=3, dtype="float64")
    with torch.no_grad():
        d.W_enc.zero_()
        d.W_enc[6:8, 0] = 1.0  # latent 0 reads head 3 only (4 heads of d_head 2)
        d.W_enc[0:2, 1] = 1.0  # latent 1 reads head 0
        d.W_enc[:, 2] = 0.1
        d.b_enc.fill_(5.0)
        d.b_dec.zero_()
    z = torch.rand(50, 4, 2, dtype=torch.float64)
    assert top_heads(d, z, torch.tensor([0, 1])).tolist() == [3, 0]
