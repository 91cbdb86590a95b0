"""Pure-PyTorch selective scan: the readable specification of the contract.

Every backend of :func:`vmamba_zoo_kernels.selective_scan` must agree with
:func:`selective_scan_ref`.  It loops over time in Python and keeps only the
(batch, dim, N) state, so it is slow but small, works in float64 (gradcheck)
and is differentiable by autograd with respect to every input.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_ref", "expand_groups", "softplus_delta", "sasf_readout_ref"]


def softplus_delta(delta: torch.Tensor, delta_bias: Optional[torch.Tensor], delta_softplus: bool) -> torch.Tensor:
    """Δ = softplus(delta + delta_bias) (threshold 20, as mamba_ssm) or delta + delta_bias.

    delta: (batch, dim, L); delta_bias: (dim,). Returns the same shape and dtype as ``delta``.
    """
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = F.softplus(delta, beta=1.0, threshold=20.0)
    return delta


def expand_groups(BC: torch.Tensor, dim: int) -> torch.Tensor:
    """(batch, G, N, L) or (batch, N, L) -> (batch, dim, N, L), each group shared by dim // G channels."""
    if BC.dim() == 3:
        BC = BC.unsqueeze(1)
    groups = BC.shape[1]
    return BC.repeat_interleave(dim // groups, dim=1)


def selective_scan_ref(
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
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Reference selective scan (see :func:`vmamba_zoo_kernels.selective_scan` for the contract).

    Computes in float32 (float64 if ``u`` is float64)::

        Δ_t = softplus(delta_t + delta_bias)            (if delta_softplus)
        h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t          h_{-1} = initial_state or 0
        y_t = <C_t, h_t> + D u_t ;  y_t *= silu(z_t)    (if z is given)

    With ``reverse=True`` time runs from L-1 down to 0.  With ``return_states=True``
    the output is the state sequence h (batch, dim, N, L) instead of y (C, D and z
    are then not used).
    """
    compute_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    if out_dtype is None:
        out_dtype = u.dtype
    batch, dim, length = u.shape
    u_f = u.to(compute_dtype)
    dt = softplus_delta(delta.to(compute_dtype), None if delta_bias is None else delta_bias.to(compute_dtype), delta_softplus)
    A_f = A.to(compute_dtype)
    B_f = expand_groups(B.to(compute_dtype), dim)
    C_f = expand_groups(C.to(compute_dtype), dim)
    n_state = A.shape[1]
    if initial_state is None:
        h = u_f.new_zeros(batch, dim, n_state)
    else:
        h = initial_state.to(compute_dtype)
    steps = range(length - 1, -1, -1) if reverse else range(length)
    ys = [None] * length
    hs = [None] * length if return_states else None
    for t in steps:
        dt_t = dt[:, :, t, None]  # (batch, dim, 1)
        h = torch.exp(dt_t * A_f) * h + dt_t * B_f[:, :, :, t] * u_f[:, :, t, None]
        if return_states:
            hs[t] = h
        else:
            ys[t] = (h * C_f[:, :, :, t]).sum(-1)
    last_state = h
    if return_states:
        out = torch.stack(hs, dim=-1).to(out_dtype)
    else:
        y = torch.stack(ys, dim=-1)
        if D is not None:
            y = y + D.to(compute_dtype)[:, None] * u_f
        if z is not None:
            y = y * F.silu(z.to(compute_dtype))
        out = y.to(out_dtype)
    if return_last_state:
        return out, last_state.to(torch.float32 if compute_dtype == torch.float32 else compute_dtype)
    return out


def sasf_readout_ref(h: Tensor, c: Tensor, u: Tensor, d_skip: Tensor, taps: Tensor, height: int, width: int,
                           dilations: Sequence[int]) -> Tensor:
    """Spatial-Mamba's state fusion and read-out, spelled out (fp32).

    ``y[b, d, l] = C[b, l] * sum_i sum_{ky,kx} taps[d, i, ky, kx] * h[b, d, clamp(r+(ky-1)dil_i), clamp(c+(kx-1)dil_i)]
    + d_skip[d] * u[b, d, l]`` with (r, c) the pixel of step l; clamping = replicate padding.

    Args:
        h: (B, D, L) hidden states (L = height * width, row-major).
        c: (B, L) C of the route (d_state 1).
        u: (B, D, L) scan input.
        d_skip: (D,) skip weights.
        taps: (D, len(dilations), 3, 3) kernels times their mixing weights.
        height, width: the map size.
        dilations: dilation of each 3x3 kernel.
    Returns:
        (B, D, L) float32.
    """
    batch, dim, _ = h.shape
    hf = h.float().reshape(batch, dim, height, width)
    fused = torch.zeros_like(hf)
    for i, dil in enumerate(dilations):
        padded = F.pad(hf, (dil, dil, dil, dil), mode="replicate")
        for ky in range(3):
            for kx in range(3):
                window = padded[:, :, ky * dil:ky * dil + height, kx * dil:kx * dil + width]
                fused = fused + taps[:, i, ky, kx].float().view(1, dim, 1, 1) * window
    fused = fused.reshape(batch, dim, height * width)
    return fused * c.float()[:, None, :] + d_skip.float()[None, :, None] * u.float()
