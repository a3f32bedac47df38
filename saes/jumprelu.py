"""JumpReLU SAE (Rajamanoharan et al., "Jumping Ahead", 2024): codes are
z * H(z - theta) with a learned per-latent threshold theta, trained with an L0
penalty through straight-through estimators that use a rectangle kernel of
width `bandwidth` (eqs. 11-12 of the paper):

  d/dtheta JumpReLU(z) = -(theta / eps) K((z - theta) / eps)
  d/dtheta H(z - theta) = -(1 / eps) K((z - theta) / eps),   K(u) = 1[|u| < 1/2]
"""

import math

import torch
from torch import nn

from interp.dictionary import Dictionary, register


def _kernel(pre, threshold, bandwidth):
    return ((pre - threshold).abs() < bandwidth / 2).to(pre.dtype) / bandwidth


class JumpReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        grad_pre = grad * (pre > threshold).to(pre.dtype)
        grad_threshold = (-threshold * _kernel(pre, threshold, ctx.bandwidth) * grad).sum_to_size(threshold.shape)
        return grad_pre, grad_threshold, None


class StepFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        grad_threshold = (-_kernel(pre, threshold, ctx.bandwidth) * grad).sum_to_size(threshold.shape)
        return torch.zeros_like(pre), grad_threshold, None


@register("jumprelu")
class JumpReLUSAE(Dictionary):
    sweep_fields = ("d_dict", "l0_coeff")

    @classmethod
    def defaults(cls, cfg):
        return {"l0_coeff": 0.01}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.log_threshold = nn.Parameter(torch.full((cfg.d_dict,), math.log(cfg.threshold_init), dtype=self.W_enc.dtype))

    @classmethod
    def validate(cls, cfg):
        if cfg.l0_coeff <= 0 or cfg.bandwidth <= 0 or cfg.threshold_init <= 0:
            raise ValueError("jumprelu SAEs need l0_coeff, bandwidth and threshold_init > 0, "
                             f"got {cfg.l0_coeff}, {cfg.bandwidth}, {cfg.threshold_init}.")

    @property
    def threshold(self):
        return self.log_threshold.exp()

    def activation(self, pre):
        return JumpReLUFunction.apply(pre, self.threshold, self.cfg.bandwidth)

    def sparsity_loss(self, step):
        return self.cfg.l0_coeff * StepFunction.apply(step.pre, self.threshold, self.cfg.bandwidth).sum(-1).mean()

    def _scale_thresholds(self, norms):
        self.log_threshold.add_(norms.log())
