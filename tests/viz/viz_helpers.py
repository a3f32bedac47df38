"""Hand-written inputs for the viz tests (no model needed)."""

import torch

from interp.analysis.features import FeatureStats


def hand_stats(token: str = "b", meta_text: str = "x") -> FeatureStats:
    """Two latents over the vocabulary {0: "a", 1: token, 2: "c"}, every statistic written by hand: latent 0 fired
    3 times (its top context is tokens [pad, token, a, c] with activations [0, 2, 0.5, 0], the hit at index 1),
    latent 1 never. Attention-output stats (2 heads); arch, hooks and source are `meta_text`."""
    pad = [-1, 1, 0, 2]
    window = torch.tensor([0.0, 2.0, 0.5, 0.0])
    tensors = {
        "fires": torch.tensor([3, 0]), "act_sum": torch.tensor([4.5, 0.0]), "max_act": torch.tensor([2.0, 0.0]),
        "hist": torch.tensor([[1, 0, 0, 2], [0, 0, 0, 0]]), "hist_upper": torch.tensor([2.0, 1.0]),
        "head_sum": torch.tensor([[3.0, -1.5], [0.0, 0.0]]),
        "top_value": torch.tensor([[2.0, 0.0], [0.0, 0.0]]), "top_tokens": torch.tensor([[pad, pad], [pad, pad]]),
        "top_acts": torch.stack([torch.stack([window, window * 0])] * 2),
        "sample_value": torch.tensor([[[1.0], [0.0]], [[0.0], [0.0]]]),
        "sample_tokens": torch.tensor([[[pad], [pad]], [[pad], [pad]]]),
        "sample_acts": torch.stack([torch.stack([window[None] / 2, window[None] * 0])] * 2),
        "logit_top_ids": torch.tensor([[1], [1]]), "logit_top": torch.tensor([[0.75], [0.1]]),
        "logit_bottom_ids": torch.tensor([[2], [1]]), "logit_bottom": torch.tensor([[-0.5], [-0.1]]),
        "neighbour_ids": torch.tensor([[1], [0]]), "neighbour_cos": torch.tensor([[0.25], [0.25]]),
    }
    meta = {"d_dict": 2, "tokens_seen": 10, "left": 1, "bands": 2, "n_heads": 2, "arch": meta_text, "hook_in": meta_text,
            "hook_out": meta_text, "source": meta_text}
    return FeatureStats(tensors, meta, {0: "a", 1: token, 2: "c"})
