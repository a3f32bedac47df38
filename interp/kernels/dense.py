"""Dense forms of top-k codes: the scatter helper and the slow reference the kernels are checked against."""

from torch import Tensor


def to_dense(values: Tensor, indices: Tensor, d_dict: int) -> Tensor:
    """Scatter codes (values [..., k], indices [..., k]) into dense codes [..., d_dict].

    Entries add up, so the zero-valued padding of a stack's smaller-k members leaves the codes alone."""
    dense = values.new_zeros(*values.shape[:-1], d_dict)
    return dense.scatter_add(-1, indices, values)


def dense_topk_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, indices: Tensor | None = None) -> Tensor:
    """Reference TopK encoder with plain autograd: dense codes [N, d_dict].

    indices [N, k] fixes the selected latents (to compare gradients when
    pre-activations tie); by default they come from `torch.topk`.
    """
    pre = x @ W_enc + b_enc
    if indices is None:
        indices = pre.topk(k, dim=-1).indices
    return to_dense(pre.gather(-1, indices).relu(), indices, W_enc.shape[1])


def dense_decode(codes: Tensor, W_dec: Tensor) -> Tensor:
    """Reference decoder: codes [N, d_dict] @ W_dec [d_dict, d_out] -> [N, d_out]."""
    return codes @ W_dec
