"""Pairing dictionaries with models: hooks present and widths equal, or one clear error naming both."""

import warnings

import pytest
import torch

from helpers import random_dictionary
from interp.hooks import splice_hooks
from interp.io import check_compatible
from interp.io.compat import hook_width


def sae(d_in=32, hook="blocks.0.hook_resid_post", **fields):
    return random_dictionary("relu", d_in=d_in, d_dict=16, dtype="float32", hook_in=hook, **fields)


@pytest.mark.parametrize(("hook", "width"), [("blocks.1.hook_resid_post", 32), ("blocks.0.mlp.hook_post", 64),
                                             ("blocks.0.attn.hook_z", 32), ("blocks.0.ln2.hook_normalized", 32),
                                             ("blocks.0.attn.hook_q", 32)])  # the last is measured by a forward pass
def test_hook_widths(tiny, hook, width):
    assert hook_width(tiny, hook) == width


def test_matching_pairs_pass(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_compatible(sae(model=tiny.spec), tiny)
        check_compatible(random_dictionary("relu", d_in=32, d_dict=16, d_out=32, hook_in="blocks.1.ln2.hook_normalized",
                                           hook_out="blocks.1.hook_mlp_out", subtract_b_dec=False, model=tiny.spec), tiny)


def test_width_mismatch_names_hook_and_widths(tiny):
    with pytest.raises(ValueError, match=r"reads 'blocks.0.hook_resid_post' with width 2304, but model .* has width 32 .*gemma-2-2b"):
        check_compatible(sae(d_in=2304, model="gemma-2-2b"), tiny)


def test_missing_hook_and_unrecorded_hook(tiny):
    with pytest.raises(ValueError, match=r"reads 'blocks.7.hook_resid_post', which model .* does not have"):
        check_compatible(sae(hook="blocks.7.hook_resid_post"), tiny)
    with pytest.raises(ValueError, match="records no hook it reads"):
        check_compatible(sae(hook=""), tiny)


def test_other_model_name_warns(tiny):
    with pytest.warns(UserWarning, match="trained on 'gpt2'"):
        check_compatible(sae(model="gpt2"), tiny)


def test_splice_checks_widths_when_run_and_up_front(tiny):
    tokens = torch.tensor([[256, 72, 105]])
    bad = sae(d_in=16, hook="blocks.0.hook_resid_post")
    with pytest.raises(ValueError, match="width 16, but the model's activation there has width 32"):
        tiny.run_with_hooks(tokens, fwd_hooks=splice_hooks(bad))
    with pytest.raises(ValueError, match="with width 16, but model"):
        splice_hooks(bad, model=tiny)
    good = sae()
    spliced = tiny.run_with_hooks(tokens, fwd_hooks=splice_hooks(good, model=tiny))
    assert spliced.shape == (1, 3, 257)
