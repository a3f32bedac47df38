import math

import pytest
import torch

from helpers import random_dictionary
from interp.hooks import splice_hooks
from interp.interventions import AFTER_BOS, Intervention, generate, intervene, mean_codes, run_with_interventions
from interp.model import BYTE_VOCAB

TOKENS = torch.tensor([[BYTE_VOCAB - 1, *b"the cat sat"], [BYTE_VOCAB - 1, *b"a dog ran!!"]])


def sae(hook="blocks.0.hook_resid_post", d_in=32, seed=0):
    return random_dictionary("topk", d_in=d_in, d_dict=64, k=6, dtype="float32", seed=seed, hook_in=hook)


def transcoder(layer=1, seed=1):
    return random_dictionary("topk", d_in=32, d_dict=64, k=6, dtype="float32", seed=seed, subtract_b_dec=False,
                             hook_in=f"blocks.{layer}.ln2.hook_normalized", hook_out=f"blocks.{layer}.hook_mlp_out")


def dictionaries():
    """An SAE on the residual stream, a transcoder, an attention-output SAE on hook_z (4 heads x 8)."""
    return [sae(), transcoder(), sae("blocks.1.attn.hook_z", seed=2)]


def codes_of(model, d, tokens=TOKENS):
    _, codes = run_with_interventions(model, tokens, Intervention.add(d, 0, 0.0))
    return codes[d.cfg.hook_out]


@pytest.mark.parametrize("kind", range(3))
def test_zero_strength_and_self_clamp_give_the_models_logits(tiny, kind):
    d = dictionaries()[kind]
    clean = tiny(TOKENS)
    codes = codes_of(tiny, d)
    latent = int(codes[0, 3].argmax())  # active at position 3 of the first sequence
    assert codes[0, 3, latent] > 0
    self_clamp = [Intervention.clamp(d, latent, codes[0, p, latent].item(), where=p) for p in range(TOKENS.shape[1])]
    for ivs in ([Intervention.add(d, [1, 2, latent], 0.0)], [Intervention.scale(d, latent, 1.0)], self_clamp):
        logits, _ = run_with_interventions(tiny, TOKENS[:1], ivs)
        assert (logits - clean[:1]).abs().max() < 1e-5
    steered, _ = run_with_interventions(tiny, TOKENS, Intervention.add(d, latent, 3.0))
    assert (steered - clean).abs().max() > 1e-2  # the intervention does something


@pytest.mark.parametrize("kind", range(3))
def test_reconstruction_only_splice_equals_splice_hooks(tiny, kind):
    d = dictionaries()[kind]
    expected = tiny.run_with_hooks(TOKENS, fwd_hooks=splice_hooks(d))
    logits, _ = run_with_interventions(tiny, TOKENS, Intervention.add(d, 0, 0.0), keep_error=False)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert (logits - tiny(TOKENS)).abs().max() > 1e-3  # the reconstruction is not the model


def test_add_moves_the_activation_by_the_decoder_row_at_the_chosen_positions(tiny):
    d = sae()
    _, clean = tiny.run_with_cache(TOKENS, names_filter=["blocks.1.hook_resid_pre"])
    with intervene(tiny, Intervention.add(d, 5, 2.5, where=slice(2, 6))) as codes:
        _, steered = tiny.run_with_cache(TOKENS, names_filter=["blocks.1.hook_resid_pre"])
    diff = steered["blocks.1.hook_resid_pre"] - clean["blocks.1.hook_resid_pre"]
    expected = torch.zeros_like(diff)
    expected[:, 2:6] = 2.5 * d.W_dec[5]
    assert torch.allclose(diff, expected, atol=1e-5)
    before = codes_of(tiny, d)
    assert torch.allclose(codes[d.cfg.hook_out][:, 2:6, 5], before[:, 2:6, 5] + 2.5)


def test_ablate_equals_clamp_to_zero_and_mean_ablation_uses_the_held_out_mean(tiny):
    d = transcoder()
    latents = codes_of(tiny, d)[0, 4].nonzero()[:2, 0].tolist()
    ablated, codes = run_with_interventions(tiny, TOKENS, Intervention.ablate(d, latents, where=AFTER_BOS))
    clamped, _ = run_with_interventions(tiny, TOKENS, Intervention.clamp(d, latents, 0.0, where=AFTER_BOS))
    assert torch.equal(ablated, clamped) and (ablated - tiny(TOKENS)).abs().max() > 1e-4
    assert (codes[d.cfg.hook_out][:, 1:, latents] == 0).all()

    held_out = torch.tensor([[BYTE_VOCAB - 1, *b"held out text, never seen"]])
    mean = mean_codes(tiny, d, held_out)
    reference = codes_of(tiny, d, held_out)[0, 1:].mean(0)  # slow reference: every non-BOS position
    assert torch.allclose(mean, reference, atol=1e-6)
    logits, codes = run_with_interventions(tiny, TOKENS, Intervention.ablate(d, latents, where=4, mean=mean))
    assert torch.allclose(codes[d.cfg.hook_out][:, 4, latents], mean[latents].expand(2, -1))
    clamps = [Intervention.clamp(d, i, mean[i].item(), where=4) for i in latents]
    assert torch.allclose(logits, run_with_interventions(tiny, TOKENS, clamps)[0], atol=1e-6)


def test_several_dictionaries_at_once(tiny):
    ds = dictionaries()
    zero, _ = run_with_interventions(tiny, TOKENS, [Intervention.add(d, 1, 0.0) for d in ds])
    assert (zero - tiny(TOKENS)).abs().max() < 1e-5
    both, codes = run_with_interventions(tiny, TOKENS, [Intervention.add(ds[0], 1, 2.0), Intervention.clamp(ds[1], 3, 1.5)])
    assert set(codes) == {ds[0].cfg.hook_out, ds[1].cfg.hook_out}
    assert (codes[ds[1].cfg.hook_out][..., 3] == 1.5).all()
    only_first, _ = run_with_interventions(tiny, TOKENS, Intervention.add(ds[0], 1, 2.0))
    assert (both - only_first).abs().max() > 1e-4


def test_generation_is_reproducible_and_greedy_equals_manual_decoding(tiny):
    d = sae()
    iv = Intervention.add(d, 7, 4.0, where="new")
    prompt = "the cat"
    a = generate(tiny, prompt, iv, max_new_tokens=8, temperature=1.0, seed=3)
    b = generate(tiny, prompt, iv, max_new_tokens=8, temperature=1.0, seed=3)
    assert torch.equal(a, b) and len(a) == 8 + 8

    greedy = generate(tiny, prompt, iv, max_new_tokens=6)
    tokens = torch.tensor([[BYTE_VOCAB - 1, *prompt.encode()]])
    n = tokens.shape[1]

    def push(act, hook):  # the intervention by hand: add 4 * W_dec[7] at generated positions
        act = act.clone()
        act[:, n:] += 4.0 * d.W_dec[7]
        return act

    for _ in range(6):
        logits = tiny.run_with_hooks(tokens, fwd_hooks=[(d.cfg.hook_out, push)])
        top2 = logits[0, -1].topk(2).values
        assert top2[0] - top2[1] > 1e-4, "a near tie: the two paths' rounding could pick different tokens"
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy, tokens[0])  # token ids: equal because every step's argmax has a margin
    assert not torch.equal(greedy, generate(tiny, prompt, (), max_new_tokens=6))  # steering changed the text


@pytest.mark.parametrize("make, match", [
    (lambda: Intervention.add(sae(), 64, 1.0), "out of range"),
    (lambda: Intervention.add(sae(), -1, 1.0), "out of range"),
    (lambda: Intervention.add(sae(), 3, math.nan), "finite"),
    (lambda: Intervention.clamp(sae(), 3, math.inf), "finite"),
    (lambda: Intervention(sae(), 3, "boost", 1.0), "Unknown intervention"),
])
def test_bad_interventions_fail_in_one_line(make, match):
    with pytest.raises(ValueError, match=match) as err:
        make()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("iv, match", [
    (lambda: Intervention.add(sae(), 3, 1.0, where=12), "beyond the prompt"),
    (lambda: Intervention.add(sae(), 3, 1.0, where=-13), "beyond the prompt"),
    (lambda: Intervention.add(sae(d_in=16), 3, 1.0), "16 dimensions"),
    (lambda: Intervention.add(sae("blocks.7.hook_resid_post"), 3, 1.0), "Unknown hook point"),
])
def test_bad_inputs_at_run_time_fail_in_one_line(tiny, iv, match):
    with pytest.raises(ValueError, match=match) as err:
        run_with_interventions(tiny, TOKENS, iv())
    assert "\n" not in str(err.value)
    assert torch.equal(tiny(TOKENS), tiny(TOKENS))  # no hook left behind
    assert not any(h.fwd_hooks for h in tiny.hook_dict.values())


def test_latents_and_positions_from_tensors_and_numpy_ints():
    import numpy as np

    d = sae()
    iv = Intervention.add(d, torch.tensor([3, 5]), 1.0, where=np.int64(2))
    assert iv.latents == (3, 5) and iv.where == 2 and Intervention.add(d, torch.tensor(7), 1.0).latents == (7,)
    with pytest.raises(ValueError, match="integer indices"):
        Intervention.add(d, 2.5, 1.0)
    with pytest.raises(ValueError, match="not a position"):
        Intervention.add(d, 2, 1.0, where=1.5)
