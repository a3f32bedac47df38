"""Which implementation runs: pure torch everywhere, Triton on CUDA when it imports.

Order of precedence: the `backend` argument, then the environment variable
INTERP_KERNELS (torch | triton | auto), then auto. Auto picks Triton for CUDA
tensors when `import triton` works and torch otherwise.
"""

import functools
import os

import torch

BACKENDS = ("auto", "torch", "triton")
ENV_VAR = "INTERP_KERNELS"


@functools.cache
def triton_available() -> bool:
    """True when `import triton` succeeds (any failure, a broken driver included, means no)."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def triton_interpreting() -> bool:
    """True when triton runs kernels on CPU: TRITON_INTERPRET=1 was set before triton was imported."""
    if not triton_available() or os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return False
    import triton.language as tl

    return type(tl.zeros).__name__ == "InterpretedFunction"


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """'torch' or 'triton' for tensors on `device`; raises if the request cannot run."""
    name = (backend or os.environ.get(ENV_VAR) or "auto").lower()
    if name not in BACKENDS:
        raise ValueError(f"kernel backend {name!r} is not one of {BACKENDS} (argument or ${ENV_VAR})")
    if name == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if name == "triton":
        if not triton_available():
            raise RuntimeError("backend 'triton' was requested but `import triton` fails; install triton or use 'torch'")
        if device.type != "cuda" and not triton_interpreting():
            raise RuntimeError(
                f"backend 'triton' needs CUDA tensors (got {device}); to run the kernels on CPU for "
                "testing, set TRITON_INTERPRET=1 before triton is first imported; or use backend 'torch'"
            )
    return name
