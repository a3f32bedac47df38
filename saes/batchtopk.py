"""BatchTopK SAE (Bussmann et al., 2024): in training keep the k*batch largest
pre-activations across the whole batch, so tokens may use more or fewer than k
latents; at inference use a single threshold, the running mean of the smallest
activation kept in each training batch."""

import torch

from interp.dictionary import Dictionary, register

THRESHOLD_MOMENTUM = 0.99


@register("batchtopk")
class BatchTopKSAE(Dictionary):
    sweep_fields = ("d_dict", "k")

    @classmethod
    def defaults(cls, cfg):
        return {"k": 32, "aux_k": cfg.d_in // 2}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros((), dtype=self.W_enc.dtype))

    @classmethod
    def validate(cls, cfg):
        if not 0 < cfg.k <= cfg.d_dict:
            raise ValueError(f"batchtopk SAEs need 0 < k <= d_dict, got k={cfg.k}, d_dict={cfg.d_dict}.")

    def activation(self, pre):
        """Inference: one global threshold."""
        return torch.where(pre > self.threshold, pre, torch.zeros_like(pre)).relu()

    def training_codes(self, x, **extras):
        pre = self.pre_acts(x)
        flat = torch.relu(pre).flatten()
        values, indices = flat.topk(self.cfg.k * pre.shape[0], sorted=False)
        codes = torch.zeros_like(flat).scatter_(0, indices, values).view_as(pre)
        self._update_threshold(values.detach())
        return pre, codes

    @torch.no_grad()
    def _update_threshold(self, kept: torch.Tensor) -> None:
        positive = kept[kept > 0]
        if positive.numel():
            smallest = positive.min()
            if self.threshold == 0:
                self.threshold.copy_(smallest)
            else:
                self.threshold.lerp_(smallest, 1 - THRESHOLD_MOMENTUM)

