"""Backend selection for :func:`vmamba_zoo_kernels.selective_scan`."""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch

from .cpu import selective_scan_chunked
from .native_cpu import native_library, native_usable, scan_rows_native

__all__ = ["run_backend", "triton_available", "resolve_backend", "native_or_chunked"]


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
    """The backend that runs for ``backend`` on ``device`` ("auto": Triton on CUDA, else the chunked path).

    On the CPU, "auto" runs the native kernel instead of the chunked path where it can (no autograd graph
    needed, see :func:`vmamba_zoo_kernels.native_cpu.native_usable`); :func:`run_backend` decides that per call.
    """
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "cpu"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' needs the triton package (pip install triton); "
                               "use backend='auto' or 'cpu' instead")
        if device.type != "cuda" and not _interpreting():
            raise ValueError(f"backend='triton' runs on CUDA tensors (got {device.type}); "
                             "set TRITON_INTERPRET=1 to run the kernels on the CPU for testing, or use backend='cpu'")
    if backend == "native":
        if device.type != "cpu":
            raise ValueError(f"backend='native' runs on CPU tensors (got {device.type}); use backend='auto'")
        if native_library() is None:
            raise RuntimeError("backend='native' needs a C compiler to build the kernel once (cc, gcc or clang, "
                               "or $CC) and VMAMBA_ZOO_NATIVE_CPU not set to 0; use backend='cpu' or 'auto'")
    return backend


def native_or_chunked(requested: str, resolved: str, *tensors: Optional[torch.Tensor]) -> str:
    """``resolved``, or "native" where "auto" resolved to the chunked CPU path and the native kernel can
    run on ``tensors``.  Raises ValueError when "native" was asked for where it cannot run."""
    if requested == "auto" and resolved == "cpu" and native_usable(*tensors):
        return "native"
    if resolved == "native" and not native_usable(*tensors):
        raise ValueError("backend='native' is forward only (float16/32 CPU inputs, no autograd, no tracing or "
                         "torch.compile); use backend='cpu' (the chunked path) or 'auto', which picks it")
    return resolved


def run_backend(backend: str, deterministic: bool, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                return_last_state, *, out_dtype: Optional[torch.dtype], initial_state, reverse, return_states):
    requested, backend = backend, resolve_backend(backend, u.device)
    out_dtype = out_dtype or u.dtype
    if backend in ("cpu", "native"):
        backend = native_or_chunked(requested, backend, u, delta, A, B, C, D, z, delta_bias, initial_state)
    if backend == "native":
        if B.dim() == 3:
            B, C = B.unsqueeze(1), C.unsqueeze(1)
        return scan_rows_native(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                                out_dtype=out_dtype, initial_state=initial_state, reverse=reverse,
                                return_states=return_states)
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
