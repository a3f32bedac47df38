"""TopK SAE (Gao et al., "Scaling and evaluating sparse autoencoders", 2024):
keep the k largest pre-activations per token (ReLU'd); no sparsity penalty,
AuxK on dead latents against collapse (shared in `interp.losses`)."""

import torch

from interp.dictionary import Dictionary, register


def topk_codes(pre: torch.Tensor, k: int, score: torch.Tensor | None = None) -> torch.Tensor:
    """[batch, d_dict] -> relu(pre) where `score` (default: pre) is among the k largest of its row, else 0."""
    indices = (pre if score is None else score).topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(pre).scatter_(-1, indices, torch.relu(pre.gather(-1, indices)))


@register("topk")
class TopKSAE(Dictionary):
    @classmethod
    def validate(cls, cfg):
        if not 0 < cfg.k <= cfg.d_dict:
            raise ValueError(f"topk SAEs need 0 < k <= d_dict, got k={cfg.k}, d_dict={cfg.d_dict}.")

    def activation(self, pre):
        return topk_codes(pre, self.cfg.k)
