"""ReLU SAE with an L1 penalty weighted by decoder norms (Anthropic, "Towards
Monosemanticity" and the April 2024 update): loss = ||x - x_hat||^2 +
l1_coeff * sum_i f_i ||W_dec_i||. Decoder norms are free during training and
folded into the latents on save."""

import torch

from interp.dictionary import Dictionary, register


@register("relu")
class ReLUSAE(Dictionary):
    unit_norm_decoder = False
    sweep_fields = ("d_dict", "l1_coeff")

    @classmethod
    def defaults(cls, cfg):
        return {"l1_coeff": 5.0}

    @classmethod
    def validate(cls, cfg):
        if cfg.l1_coeff <= 0:
            raise ValueError(f"relu SAEs need l1_coeff > 0, got {cfg.l1_coeff}.")

    def activation(self, pre):
        return torch.relu(pre)

    def sparsity_loss(self, step):
        return self.cfg.l1_coeff * (step.codes * self.W_dec.norm(dim=1)).sum(-1).mean()
