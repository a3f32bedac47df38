"""Gradient SAE (Olmo et al., "Features that Make a Difference", 2024): TopK
whose selection also weighs each latent's effect on the language model's loss.

With g the gradient of the model's next-token loss at the SAE's hook, latent i
has sensitivity s_i = |d_i . g_hat| (d_i its unit decoder row) and is selected
by relu(z_i) * (1 + beta * s_i); kept values are the ordinary relu(z_i).

Choices (documented here because the paper leaves them open):
- g is the gradient of the loss summed over positions (interp.data.gradients).
- g is normalised to unit length per token, so s_i lies in [0, 1] and beta
  means the same at every hook and for every model: a latent aligned with the
  gradient has its score multiplied by (1 + beta). The gradient's raw scale
  varies by orders of magnitude across tokens and would otherwise dominate.
- Inference has no gradient. Two modes: plain TopK on z (`encode(x)`, the
  default), or one global threshold theta calibrated after training on
  held-out activations so that the mean L0 is k (`calibrated_threshold` +
  `thresholded`: codes = z * [z > theta], so tokens may use more or fewer than
  k latents, as the gradient let them in training). Measured on SmolLM2-135M
  (experiments/results/gsae_vs_topk.md), plain TopK is far better: the few
  tokens with outlier norms clear a global threshold with thousands of latents.
- `encode(x, grad=g)` selects with the true gradient, as in training. At
  evaluation time g can be computed, but it depends on the tokens being
  predicted: an oracle, an upper bound for gradient-free inference.
"""

import torch

from interp.dictionary import register
from interp.kernels import topk_encode
from saes.batchtopk import BatchTopKSAE
from saes.topk import TopKSAE


def sensitivity(grad: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """|d_i . g_hat| for every latent: grad [batch, d_out], W_dec [d_dict, d_out] -> [batch, d_dict]."""
    g_hat = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return (g_hat @ W_dec.detach().T).abs()


@register("gsae")
class GradientSAE(TopKSAE):
    needs = ("grad",)
    sweep_fields = ("d_dict", "k", "beta")

    @classmethod
    def defaults(cls, cfg):
        return {**super().defaults(cfg), "beta": 1.0}

    def selection_scale(self, x, grad=None, **extras):
        return None if grad is None else 1 + self.cfg.beta * sensitivity(grad, self.W_dec)

    def encode(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        """[batch, d_in] -> codes [batch, d_dict]: plain TopK, or with `grad` [batch, d_out] the
        gradient-weighted selection of training (an oracle at inference; see the module docstring)."""
        if grad is None:
            return super().encode(x)
        values, indices = topk_encode(self.centred(x), self.W_enc, self.b_enc, self.cfg.k, self.selection_scale(x, grad=grad))
        return torch.zeros(*values.shape[:-1], self.d_dict, dtype=values.dtype, device=values.device).scatter_(-1, indices, values)


@torch.no_grad()
def calibrated_threshold(sae: TopKSAE, x: torch.Tensor, k: int | None = None, batch_size: int = 4096) -> float:
    """The global theta >= 0 at which z * [z > theta] has mean L0 k (default sae.cfg.k) on x [n, d_in].

    theta is the (k*n + 1)-th largest pre-activation over all of x, found batch by batch."""
    k = sae.cfg.k if k is None else k
    keep = k * len(x)
    top = sae.W_enc.new_empty(0)
    for chunk in x.split(batch_size):
        both = torch.cat([top, sae.pre_acts(chunk.to(sae.W_enc)).flatten()])
        top = both.topk(min(keep + 1, len(both)), sorted=True).values
    return max(0.0, top[keep].item()) if len(top) > keep else 0.0


def thresholded(sae: TopKSAE, theta: float, calibration: str = "") -> BatchTopKSAE:
    """A copy of `sae` whose encoder keeps z * [z > theta] (BatchTopK's inference, so it saves,
    loads, splices and evaluates like any dictionary); `calibration` is recorded in cfg.training."""
    training = {**sae.cfg.training, "from_arch": sae.cfg.arch, "threshold": theta, "calibration": calibration}
    out = BatchTopKSAE(sae.cfg.replace(arch="batchtopk", training=training)).to(sae.W_enc.device)
    out.load_state_dict({**sae.state_dict(), "threshold": torch.tensor(theta, dtype=sae.W_enc.dtype)})
    return out
