"""How many rows the CPU TopK encoder computes and selects at a time: measured on this CPU.

The encoder computes pre-activations a block of rows at a time and selects each
block's top-k while the block is still in cache. Small blocks keep the top-k
in cache; big blocks let the GEMM run at full speed. Where the balance lies
depends on the CPU and its BLAS, so it is measured, not guessed from a CPU name:

- Intel Xeon (AMX, where the kernels were first tuned): 256 rows of 8,192 fp32
  latents (8 MiB) were the best of 128/256/512, and bf16 GEMMs paid off only
  in blocks of 1,024+ rows.
- AMD EPYC (Zen 3, AVX2, 2 threads, 2026-12-02): MKL's fp32 GEMM
  [rows, 512] x [512, 8192] ran at 0.77 of its whole-batch speed in 256-row
  blocks, 0.86 in 512, 0.93 in 1,024, 0.96 in 2,048.

So the first time a shape needs more than one block, every candidate (blocks
of 8, 16, 32, 64 and 128 MiB of pre-activations) runs the real selection on
that call's own first rows, in turns, and the fastest wins for the rest of the
process (one to two seconds at d_in 512, d_dict 8,192). On that EPYC the whole
4,096-row batch (72 MiB at d_dict 4,608) encoded at 1.18 of the GEMM's time in
one block against 1.25-1.26 in blocks of 2,048 and 1,366 rows (medians of 8
turns), so the 128 MiB candidate was added on 2026-12-02. The choice changes speed
only: MKL computes a row's pre-activations to the same bits in any block of
16 or more rows (not in blocks of a few rows, where it takes other paths), and
the encoder cuts even blocks of at least 16 rows, so the codes are the same
whatever was measured (tests/kernels/test_blocks.py checks it).

INTERP_CPU_BLOCK_ROWS=N fixes the block instead (tests use it to cross blocks).
The block's buffer is kept between calls, one per thread: blocks of 32 MiB and
more would otherwise be fresh pages on every call (64 ms of page faults per
128 MiB on that EPYC).
"""

import os
import threading
import time
from collections.abc import Callable

import torch

ENV_VAR = "INTERP_CPU_BLOCK_ROWS"
CANDIDATE_BYTES = (2**23, 2**24, 2**25, 2**26, 2**27)  # 8 to 128 MiB of pre-activations per block
MIN_ROWS = 32  # even blocks of at least 16 rows (encode.py): the same bits in any of them
ROUNDS = 2  # timed turns per candidate, after one untimed turn
CLOCK = time.perf_counter

_chosen: dict[tuple, int] = {}
_local = threading.local()


def candidate_rows(d_dict: int, dtype: torch.dtype) -> list[int]:
    """Block heights (rows) whose pre-activations [rows, d_dict] take each of CANDIDATE_BYTES."""
    row_bytes = d_dict * torch.empty((), dtype=dtype).element_size()
    return sorted({max(MIN_ROWS, size // row_bytes) for size in CANDIDATE_BYTES})


def fastest(runs: dict[int, Callable[[], object]], rounds: int = ROUNDS) -> int:
    """The key of the fastest zero-argument call: one untimed turn each, then `rounds` timed turns in turns."""
    best = dict.fromkeys(runs, float("inf"))
    for r in range(rounds + 1):
        for key, run in runs.items():
            start = CLOCK()
            run()
            if r:
                best[key] = min(best[key], CLOCK() - start)
    return min(best, key=best.get)


def block_rows(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int,
               select: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, int], object]) -> int:
    """Rows per CPU block for x [n, d_in] against W_enc [d_in, d_dict] (n itself when one block holds them).

    `select(x, W_enc, b_enc, k, rows)` is the selection to time, on this call's own first rows and weights
    (no allocation beyond one block), the first time this shape needs more than one block.
    """
    fixed = os.environ.get(ENV_VAR)
    if fixed:
        if not fixed.isdigit() or int(fixed) < 1:
            raise ValueError(f"${ENV_VAR}={fixed!r}: expected a positive number of rows (or unset it to measure)")
        return int(fixed)
    (n, d_in), d_dict = x.shape, W_enc.shape[1]
    sizes = candidate_rows(d_dict, x.dtype)
    if n <= sizes[0]:
        return n
    key = (d_in, d_dict, k, x.dtype, torch.get_num_threads())
    if key not in _chosen:
        sample = x[: sizes[-1]]
        sizes = [size for size in sizes if size < len(sample)] + [len(sample)]
        _chosen[key] = fastest({size: (lambda size=size: select(sample, W_enc, b_enc, k, size)) for size in sizes})
    return _chosen[key]


def measured() -> dict[tuple, int]:
    """The block heights measured so far in this process: {(d_in, d_dict, k, dtype, threads): rows}."""
    return dict(_chosen)


def block_buffer(rows: int, d_dict: int, dtype: torch.dtype) -> torch.Tensor:
    """A [rows, d_dict] CPU buffer for one block of pre-activations, reused by this thread's later calls."""
    buf = getattr(_local, "buffer", None)
    if buf is None or buf.dtype != dtype or buf.numel() < rows * d_dict:
        buf = _local.buffer = torch.empty(rows * d_dict, dtype=dtype)
    return buf[: rows * d_dict].view(rows, d_dict)
