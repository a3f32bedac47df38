"""Workload shapes, synthetic activations and timing shared by the benchmark scripts.

Pure torch, so the library runner can import it inside another virtual
environment that does not have this toolkit installed.
"""

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shapes:
    d_in: int = 512
    d_dict: int = 8192
    k: int = 32
    batch: int = 4096  # tokens per training step (W1, W2) and per inference batch (W3)
    n_infer: int = 65536  # activations encoded and decoded in W3
    l1_coeff: float = 5.0  # W2
    lr: float = 1e-4


SHAPES = Shapes()


def synthetic_activations(n: int, d_in: int, seed: int = 0) -> torch.Tensor:
    """[n, d_in] float32 activations with an uneven spectrum, like a residual stream."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -1.5, d_in, device="cpu")
    x = torch.randn(n, d_in, generator=g, device="cpu") * scales + 0.1
    return x.to(torch.get_default_device())  # on the benchmark's device (use_device), same values everywhere


def best_times(calls: dict, rounds: int, warmup: int = 1) -> dict[str, float]:
    """Fastest wall seconds of each zero-argument call, the calls taking turns round by round.

    The machine may be shared: taking turns exposes every call to the same
    load, and the fastest of its rounds estimates its uncontended cost (other
    processes only ever add time). Ratios between calls of one run are the
    numbers to trust.
    """
    best = {name: float("inf") for name in calls}
    for r in range(warmup + rounds):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            sync()
            if r >= warmup:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def sync() -> None:
    """Wait for queued CUDA work, so wall-clock timings cover it (a no-op on CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def use_device(device: str) -> None:
    """Create the benchmark's tensors on `device` ("cpu", "cuda"): torch's default device."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: this torch ({torch.__version__}) sees no CUDA device; use --device cpu.")
    torch.set_default_device(device)


def gemm_floor_call(shapes: Shapes = SHAPES):
    """One encoder GEMM [batch, d_in] @ [d_in, d_dict] + bias into a reused buffer: no SAE step beats it."""
    x = synthetic_activations(shapes.batch, shapes.d_in)
    W = torch.randn(shapes.d_dict, shapes.d_in, generator=torch.Generator().manual_seed(1), device="cpu")
    W = W.to(torch.get_default_device()).t() / shapes.d_in**0.5  # same layout as the SAEs' W_enc
    b = torch.zeros(shapes.d_dict)
    out = torch.empty(shapes.batch, shapes.d_dict)
    return lambda: torch.addmm(b, x, W, out=out)


def torchrun_throughput(nproc: int, model: str, hook: str, tokens: int, extra: list[str], threads: int, port: int) -> float:
    """Tokens/s of `interp train` under torchrun with `nproc` CPU ranks (process start, harvest, training
    and eval included); `extra` adds flags, `threads` sets OMP_NUM_THREADS per rank."""
    out = tempfile.mkdtemp(prefix=f"torchrun{nproc}-")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(port),
           "-m", "interp", "train", "--model", model, "--hook", hook, "--tokens", str(tokens), *extra,
           "--batch-size", "1024", "--eval-contexts", "2", "--checkpoint-every", "100000", "--out", out]
    start = time.time()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return tokens / (time.time() - start)


def machine_line() -> str:
    """The CPU model, threads torch uses and the load average, for a benchmark's header and footer."""
    if torch.cuda.is_available() and torch.get_default_device().type == "cuda":
        return f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}; host load average: {os.getloadavg()[0]:.2f}"
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "unknown CPU")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"CPU: {model}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; load average (1/5/15 min): {load}"
