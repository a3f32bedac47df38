"""TopK SAE (Gao et al., "Scaling and evaluating sparse autoencoders", 2024):
keep the k largest pre-activations per token (ReLU'd); no sparsity penalty,
AuxK on dead latents against collapse (shared in `interp.training.losses`).

Training runs on the sparse kernels (`interp.kernels`): a fused TopK encoder
and a gather-sum decoder whose backward passes touch only the selected latents.
"""

import torch

from interp.dictionary import Dictionary, TrainingStep, register
from interp.kernels import sparse_decode, topk_encode


def topk_codes(pre: torch.Tensor, k: int) -> torch.Tensor:
    """[batch, d_dict] -> the same shape with all but the k largest entries per row zeroed (then ReLU)."""
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, indices, torch.relu(values))


@register("topk")
class TopKSAE(Dictionary):
    sweep_fields = ("d_dict", "k")

    @classmethod
    def defaults(cls, cfg):
        return {"k": 32, "aux_k": cfg.d_in // 2}

    @classmethod
    def validate(cls, cfg):
        if not 0 < cfg.k <= cfg.d_dict:
            raise ValueError(f"{cfg.arch} SAEs need 0 < k <= d_dict, got k={cfg.k}, d_dict={cfg.d_dict}.")

    def activation(self, pre):
        return topk_codes(pre, self.cfg.k)

    def selection_scale(self, x: torch.Tensor, **extras) -> torch.Tensor | None:
        """Per-latent factors [batch, d_dict] that re-rank latents for selection (None: by pre-activation)."""
        return None

    @classmethod
    def stacked_forward(cls, stack, members, x):
        """One stacked TopK encode and one sparse decode over E * d_dict latents, one k per member."""
        first = members[0]
        if first.needs:
            return super().stacked_forward(stack, members, x)
        centre = stack.b_dec if first.cfg.subtract_b_dec else None
        skip = x @ stack.W_skip if first.cfg.skip else 0.0
        values, indices = topk_encode(x.expand(len(members), *x.shape), stack.W_enc, stack.b_enc, [m.cfg.k for m in members],
                                      centre=centre)
        recon = sparse_decode(values, indices, stack.W_dec) + stack.b_dec[:, None] + skip
        return [TrainingStep(r, values=v, indices=i) for r, v, i in zip(recon.unbind(), values.unbind(), indices.unbind())]

    def training_forward(self, x, **extras):
        centre = self.b_dec if self.cfg.subtract_b_dec else None  # subtracted in the kernel: b_dec's gradient without grad_x
        values, indices = topk_encode(x, self.W_enc, self.b_enc, self.cfg.k, self.selection_scale(x, **extras), centre=centre)
        recon = self.with_skip(sparse_decode(values, indices, self.W_dec) + self.b_dec, x)
        return TrainingStep(recon, values=values, indices=indices)
