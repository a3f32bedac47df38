"""Shared test helpers (imported as `helpers`; tests/ is on pytest's pythonpath)."""

import torch

TINY = "tiny:n_layers=2,d_model=32,n_heads=4,d_mlp=64,n_ctx=64"
SMALL_KNOBS = {"k": 4, "l1_coeff": 1.0, "l0_coeff": 1.0}


def random_dictionary(arch: str, d_in: int = 8, d_dict: int = 16, seed: int = 0, dtype: str = "float64", **fields):
    from interp.dictionary import DictionaryConfig, architecture

    # Knob values small enough for d_dict=16 (architectures ignore the knobs they do not use).
    cfg = DictionaryConfig(arch=arch, d_in=d_in, d_dict=d_dict, dtype=dtype, **{**SMALL_KNOBS, **fields})
    d = architecture(arch)(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in d.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return d


def clear_rows(scores: torch.Tensor, k: int, tol: float) -> torch.Tensor:
    """Rows of scores [n, d_dict] whose ReLU'd top-k codes cannot change under a perturbation of `tol`:
    the k-th and (k+1)-th largest differ by more than 2 tol and none of the top k+1 is within tol of 0."""
    top = scores.topk(k + 1, dim=-1).values
    return (top[:, k - 1] - top[:, k] > 2 * tol) & (top.abs() > tol).all(-1)


def clear_codes(d, x: torch.Tensor, tol: float) -> torch.Tensor:
    """Mask [n, d_dict] of the codes of dictionary `d` on x whose on/off state cannot change under a perturbation
    of `tol` in the pre-activations: away from 0 and from the threshold (JumpReLU, BatchTopK at inference) by
    more than tol; for TopK, whole rows (`clear_rows`)."""
    with torch.no_grad():
        pre = d.pre_acts(x)
        if d.arch == "topk":
            return clear_rows(pre, d.cfg.k, tol)[:, None].expand_as(pre)
        clear = pre.abs() > tol
        if hasattr(d, "threshold"):
            clear &= (pre - d.threshold).abs() > tol
    return clear


def assert_same_topk_codes(a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor, k: int, tol: float = 1e-6,
                           min_clear: float = 0.9) -> None:
    """Codes a, b [n, d_dict] from two code paths (e.g. the fused kernel and Tensor.topk on another GEMM):
    on the rows whose selection has a margin (`clear_rows` of the scores that ranked them) the same
    latents fire with values equal to `tol`; at least `min_clear` of the rows must have that margin.
    Bit-equality is not expected: two GEMMs may round differently on another CPU's BLAS."""
    rows = clear_rows(scores, k, tol)
    assert rows.float().mean() >= min_clear, f"only {int(rows.sum())}/{len(rows)} rows have a selection margin of {tol}"
    assert torch.equal(a[rows] != 0, b[rows] != 0), "different latents selected on rows with a clear margin"
    torch.testing.assert_close(a[rows], b[rows], rtol=0, atol=tol)


class FixedStore:
    """A stand-in activation store for data-parallel tests: step s serves rows s*batch .. (s+1)*batch of
    every tensor in `tensors` ({key: [rows, d]}), this rank's 1/world of them; resumes at a step."""

    def __init__(self, tensors: dict, batch: int, rank: int = 0, world: int = 1):
        self.tensors, self.global_batch, self.rank, self.batch_size = tensors, batch, rank, batch // world
        self.hooks = {k: "synthetic" for k in tensors}
        self.step = 0

    def block_rows(self, block):
        return {k: v[:self.global_batch] for k, v in self.tensors.items()}

    def norm_scales(self):
        return {k: 1.0 for k in self.tensors}

    def __iter__(self):
        while True:
            start = self.step * self.global_batch + self.rank * self.batch_size
            self.step += 1
            yield {k: v[start:start + self.batch_size] for k, v in self.tensors.items()}

    def state_dict(self):
        return {"block": self.step, "served": 0}

    def state_tensors(self):
        return {}

    def load_state(self, state, tensors):
        self.step = state["block"]
