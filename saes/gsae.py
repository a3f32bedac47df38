"""Gradient SAE (Olmo et al., "Features that Make a Difference", 2024): TopK
whose selection also weighs each latent's effect on the language model's loss.

With g the gradient of the model's next-token loss at the SAE's hook, latent i
has sensitivity s_i = |d_i . g_hat| (d_i its unit decoder row) and is selected
by relu(z_i) * (1 + beta * s_i); kept values are the ordinary relu(z_i).

Choices (documented here because the paper leaves them open):
- g is the gradient of the loss summed over positions (interp.gradients).
- g is normalised to unit length per token, so s_i lies in [0, 1] and beta
  means the same at every hook and for every model: a latent aligned with the
  gradient has its score multiplied by (1 + beta). The gradient's raw scale
  varies by orders of magnitude across tokens and would otherwise dominate.
- Without a gradient (inference, splicing) selection is plain TopK on z.
"""

import torch

from interp.dictionary import register
from saes.topk import TopKSAE


def sensitivity(grad: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """|d_i . g_hat| for every latent: grad [batch, d_out], W_dec [d_dict, d_out] -> [batch, d_dict]."""
    g_hat = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return (g_hat @ W_dec.detach().T).abs()


@register("gsae")
class GradientSAE(TopKSAE):
    needs = ("grad",)

    def selection_scale(self, x, grad=None, **extras):
        return None if grad is None else 1 + self.cfg.beta * sensitivity(grad, self.W_dec)
