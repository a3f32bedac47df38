"""Matryoshka BatchTopK SAE (Bussmann et al., "Learning Multi-Level Features with
Matryoshka Sparse Autoencoders", 2025; Nabeshima, 2024): nested prefixes of the
dictionary must each reconstruct the input on their own, so the first latents
learn general features and later ones refine them (less absorption and splitting).

Codes are BatchTopK's (the k*batch largest pre-activations of the batch in
training, one global threshold at inference; `saes.batchtopk`). With prefix
widths m_1 < m_2 < ... < m_P = d_dict (`cfg.prefixes`, cumulative, as SAELens's
`matryoshka_widths`; d_dict is always the last prefix, listed or not, so a sweep
over d_dict keeps the inner prefixes), prefix p reconstructs x with latents [0, m_p):

    x_hat_p = codes[:, :m_p] W_dec[:m_p] + b_dec
    loss    = sum_p ||x - x_hat_p||^2          (summed over d, averaged over tokens)

The outer term (p = P) is the shared loop's reconstruction loss; the inner
terms are this architecture's extra loss (`sparsity_loss`), which is why the
architecture is an SAE only: its target is its input. With one prefix
(`prefixes=[]` or `[d_dict]`) it is BatchTopK exactly. SAELens's
`MatryoshkaBatchTopKTrainingSAE` sums the same terms with unit weights; it and
dictionary_learning save the trained SAE for inference as JumpReLU with the
global threshold, which is how `interp.io.saelens` writes batchtopk too.
"""

from __future__ import annotations

import torch

from interp.dictionary import TrainingStep, register
from interp.training.losses import reconstruction_loss
from saes.batchtopk import BatchTopKSAE


def prefix_widths(cfg) -> tuple[int, ...]:
    """The cumulative prefix widths, ending at d_dict (one prefix when `cfg.prefixes` is empty)."""
    inner = tuple(cfg.prefixes)
    return inner if inner[-1:] == (cfg.d_dict,) else (*inner, cfg.d_dict)


@register("matryoshka")
class MatryoshkaSAE(BatchTopKSAE):
    @classmethod
    def validate(cls, cfg):
        super().validate(cfg)
        widths = prefix_widths(cfg)
        if any(a >= b for a, b in zip(widths, widths[1:])) or widths[0] <= 0:
            raise ValueError(f"matryoshka prefixes must be strictly increasing cumulative widths between 1 and "
                             f"d_dict={cfg.d_dict}, got {list(cfg.prefixes)}; e.g. prefixes=[128, 512] (d_dict is the last).")
        if cfg.hook_in != cfg.hook_out or cfg.d_in != cfg.d_out or cfg.skip:
            raise ValueError("matryoshka dictionaries are SAEs (their prefix losses reconstruct the input); got "
                             f"{cfg.hook_in} -> {cfg.hook_out}, d_in={cfg.d_in}, d_out={cfg.d_out}, skip={cfg.skip}.")

    def prefix_reconstructions(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """codes [batch, d_dict] -> the reconstructions [batch, d_out] of every prefix but the last."""
        out, start, recon = [], 0, self.b_dec
        for width in prefix_widths(self.cfg)[:-1]:
            recon = recon + codes[:, start:width] @ self.W_dec[start:width]
            out.append(recon)
            start = width
        return out

    def training_forward(self, x, **extras):
        step = super().training_forward(x, **extras)
        step.inner = self.prefix_reconstructions(step.codes)
        step.target = x
        return step

    def sparsity_loss(self, step: TrainingStep) -> torch.Tensor:
        """The inner prefixes' reconstruction losses (the outer one is the loop's); 0 with one prefix."""
        total = step.recon.new_zeros(())
        for recon in getattr(step, "inner", ()):
            total = total + reconstruction_loss(recon.float(), step.target.float())
        return total
