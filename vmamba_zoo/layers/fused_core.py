"""The SS2D mixer core fused into the selective-scan kernel (GPU path of gather patterns).

The unfused core materialises the routes::

    xs = pattern.scan(x)                                   (B, K, D, L) copy
    dts, Bs, Cs = x_proj(xs) ... ; ys = selective_scan(xs, ...)   (B, K, D, L) output
    y = pattern.merge(ys)                                  (B, D, H, W)

Because ``x_proj`` and ``dt_projs`` act on each pixel, they can run on the map
in pixel order instead; the kernel then gathers each route's steps through the
pattern's route index and adds every output straight onto the merged map, so
neither (B, K, D, L) tensor exists.  For a padding step (index -1) both paths
read zeros, so Δ there is softplus(delta_bias) in both.
"""
from __future__ import annotations

import torch
from torch import nn

from vmamba_zoo_kernels import selective_scan_routes

__all__ = ["ss2d_core_fused", "can_fuse"]


def can_fuse(mixer: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``mixer``'s core can take the fused kernel for input ``x`` (CUDA, a gather pattern, no state fusion)."""
    from vmamba_zoo_kernels.dispatch import triton_available

    pattern = mixer.scan_pattern
    return (x.is_cuda and triton_available() and getattr(pattern, "is_gather", False)
            and not getattr(pattern, "fuses_states", False))


def ss2d_core_fused(mixer: nn.Module, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Fused scan + selective scan + merge of an SS2D-style mixer.

    Args:
        mixer: a module with ``scan_pattern`` (gather pattern), ``x_proj_weight`` (K, R+2N, D),
            ``dt_projs_weight`` (K, D, R), ``dt_projs_bias`` (K, D), ``A_logs`` (K*D, N), ``Ds`` (K*D,),
            ``d_state`` and ``dt_rank``.
        x: (B, D, H, W) after the depth-wise conv and activation.
    Returns:
        (B, D, H, W) float32, equal to the unfused core's output.
    """
    batch, dim, height, width = x.shape
    pattern = mixer.scan_pattern
    n, r = mixer.d_state, mixer.dt_rank
    route_index = pattern.route_indices(height, width, x.device)
    routes = route_index.shape[0]
    pixels = height * width
    xf = x.reshape(batch, dim, pixels)
    x_dbl = torch.einsum("bdp,kcd->bkcp", xf, mixer.x_proj_weight.to(x.dtype))  # (B, K, R+2N, P), pixel order
    dts, bs, cs = torch.split(x_dbl, [r, n, n], dim=2)
    dts = torch.einsum("bkrp,kdr->bkdp", dts, mixer.dt_projs_weight.to(x.dtype)).reshape(batch, routes * dim, pixels)
    y = selective_scan_routes(
        xf, dts, -torch.exp(mixer.A_logs.float()), bs.contiguous(), cs.contiguous(), mixer.Ds.float(),
        mixer.dt_projs_bias.float().reshape(-1), True, route_index=route_index, backend=backend,
        fused=True if backend == "triton" else None)
    return y.view(batch, dim, height, width)
