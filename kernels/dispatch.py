"""Backend selection for :func:`vmamba_zoo_kernels.selective_scan`."""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch

from .cpu import selective_scan_chunked

__all__ = ["run_backend", "triton_available", "resolve_backend"]


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when Triton imports (it is optional: CPU-only installs run without it)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that runs for ``backend`` on ``device`` ("auto": Triton on CUDA, else the chunked path)."""
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "cpu"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' needs the triton package (pip install triton); "
                               "use backend='auto' or 'cpu' instead")
        if device.type != "cuda" and not _interpreting():
            raise ValueError(f"backend='triton' runs on CUDA tensors (got {device.type}); "
                             "set TRITON_INTERPRET=1 to run the kernels on the CPU for testing, or use backend='cpu'")
    return backend


def run_backend(backend: str, deterministic: bool, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                return_last_state, *, out_dtype: Optional[torch.dtype], initial_state, reverse, return_states):
    backend = resolve_backend(backend, u.device)
    out_dtype = out_dtype or u.dtype
    if backend == "cpu":
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                                      out_dtype=out_dtype, initial_state=initial_state, reverse=reverse,
                                      return_states=return_states)
    from .ops import selective_scan_triton

    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    if u.dtype == torch.float64:
        raise ValueError("the Triton backend computes in float32; use backend='ref' for float64")
    out, last = selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
                                      reverse, return_states, out_dtype, deterministic)
    return (out, last) if return_last_state else out
