"""Shared test helpers (imported as `helpers`; tests/ is on pytest's pythonpath)."""

import torch

TINY = "tiny:n_layers=2,d_model=32,n_heads=4,d_mlp=64,n_ctx=64"


def random_dictionary(arch: str, d_in: int = 8, d_dict: int = 16, seed: int = 0, dtype: str = "float64", **fields):
    from interp.dictionary import DictionaryConfig, architecture

    defaults = {"topk": {"k": 4}, "batchtopk": {"k": 4}, "relu": {"l1_coeff": 1.0}, "jumprelu": {"l0_coeff": 1.0}}
    cfg = DictionaryConfig(arch=arch, d_in=d_in, d_dict=d_dict, dtype=dtype, **{**defaults[arch], **fields})
    d = architecture(arch)(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in d.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return d
