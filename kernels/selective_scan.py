"""Public selective-scan entry point: argument checks and backend dispatch."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from .reference import selective_scan_ref

__all__ = ["selective_scan", "BACKENDS"]

BACKENDS = ("auto", "ref", "cpu", "native", "triton")


def _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, dim, L), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (dim={dim}, N), got shape {tuple(A.shape)}")
    n_state = A.shape[1]
    if not 1 <= n_state <= 64:
        raise ValueError(f"A's state size N must be between 1 and 64, got {n_state}")
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            t = t.unsqueeze(1)
        if t.dim() != 4 or t.shape[0] != batch or t.shape[2] != n_state or t.shape[3] != length:
            raise ValueError(
                f"{name} must be (batch={batch}, G, N={n_state}, L={length}) or (batch, N, L), got {tuple(t.shape)}")
        if dim % t.shape[1] != 0:
            raise ValueError(f"dim={dim} must be divisible by the number of groups G={t.shape[1]} of {name}")
    if (B.dim() == 3) != (C.dim() == 3) or (B.dim() == 4 and B.shape[1] != C.shape[1]):
        raise ValueError(f"B and C must have the same number of groups, got {tuple(B.shape)} and {tuple(C.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (dim,):
            raise ValueError(f"{name} must be (dim={dim},), got {tuple(t.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    if initial_state is not None and initial_state.shape != (batch, dim, n_state):
        raise ValueError(f"initial_state must be (batch, dim, N)={(batch, dim, n_state)}, got {tuple(initial_state.shape)}")
    devices = {t.device for t in (u, delta, A, B, C, D, z, delta_bias, initial_state) if t is not None}
    if len(devices) > 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devices))}")
    if u.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise ValueError(f"u must be float32, float16 or bfloat16, got {u.dtype}")
    if delta.dtype != u.dtype:
        raise ValueError(f"delta must have u's dtype {u.dtype}, got {delta.dtype}")


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    out_dtype: Optional[torch.dtype] = None,
    initial_state: Optional[torch.Tensor] = None,
    reverse: bool = False,
    return_states: bool = False,
    backend: str = "auto",
    deterministic: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Selective scan (Mamba S6), compatible with mamba_ssm's ``selective_scan_fn``.

    Args:
        u, delta: (batch, dim, L), float32 / float16 / bfloat16 (same dtype).
        A: (dim, N) float32, 1 <= N <= 64.
        B, C: (batch, G, N, L) with dim % G == 0 (channel d uses group d // (dim // G)),
            or (batch, N, L) meaning G = 1.  Any float dtype.
        D, delta_bias: optional (dim,) float32.
        z: optional gate, shaped like u.
        delta_softplus: apply softplus (threshold 20) to delta + delta_bias.
        return_last_state: also return the final state (batch, dim, N) float32.
        out_dtype: output dtype; default u's dtype.  ``torch.float32`` with 16-bit
            inputs is the "16-bit in, fp32 out" mode that avoids half-precision overflow.
        initial_state: optional (batch, dim, N) state h_{-1}.
        reverse: scan from t = L-1 down to 0.
        return_states: return the states h (batch, dim, N, L) instead of y (C, D, z unused);
            used by structure-aware state fusion.
        backend: "auto" (Triton on CUDA; on the CPU the native kernel where no autograd graph is needed,
            else the chunked path), "triton", "cpu" (the chunked PyTorch path), "native" (the compiled CPU
            kernel, forward only: :mod:`vmamba_zoo_kernels.native_cpu`) or "ref".
        deterministic: make the backward bitwise reproducible (no float atomics).

    Math (all accumulation in float32)::

        Δ = softplus(delta + delta_bias)  if delta_softplus else delta + delta_bias
        h_t = exp(Δ_t A) * h_{t-1} + Δ_t B_t u_t
        y_t = <C_t, h_t> + D u_t ;  y_t *= silu(z_t) if z is given

    Returns:
        y (batch, dim, L) -- or h (batch, dim, N, L) with ``return_states`` -- and,
        with ``return_last_state``, the final state (batch, dim, N) float32.  Unlike
        mamba_ssm, the final state is differentiable.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    kwargs = dict(out_dtype=out_dtype, initial_state=initial_state, reverse=reverse, return_states=return_states)
    if backend == "ref":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, **kwargs)
    from .dispatch import run_backend

    return run_backend(backend, deterministic, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                       return_last_state, **kwargs)
