"""Batched sparse-dictionary kernels: fused TopK encode and sparse decode.

Codes are (values [N, k], indices [N, k] int64). Weights follow the toolkit's
layout: W_enc [d_in, d_dict], b_enc [d_dict], W_dec [d_dict, d_out]. Every
function has a pure-torch path; `sparse_decode` also has Triton kernels that
run on CUDA (backend.py says how the choice is made). On CPU the encoder works
in blocks of rows whose height is measured once per shape (blocks.py).
"""

from .backend import resolve_backend, triton_available, triton_interpreting
from .decode import sparse_decode
from .dense import to_dense
from .encode import topk_encode

__all__ = ["resolve_backend", "sparse_decode", "to_dense", "topk_encode", "triton_available", "triton_interpreting"]
