"""Multi-route selective scan over a shared map: gather, scan and merge in one call.

2-D scan patterns (VMamba's cross scan, EfficientVMamba's atrous sub-grids, raster
scans) read the pixels of one (batch, D, H, W) map along K routes, scan each route,
and sum the routes' outputs back onto the pixels.  The unfused way materialises
(batch, K, D, L) copies for the routes and their outputs.  On CUDA the Triton
kernel instead gathers every step straight from the pixel-ordered tensors through
the (K, L) route index and adds its output onto the merged map, so those copies
never exist.
"""
from __future__ import annotations

from typing import Optional

import torch

from .dispatch import native_or_chunked, resolve_backend
from .native_cpu import scan_routes_native
from .selective_scan import selective_scan

__all__ = ["selective_scan_routes", "gather_routes", "scatter_routes", "check_route_map"]


def gather_routes(t: torch.Tensor, route_index: torch.Tensor) -> torch.Tensor:
    """(batch, K, C, P) pixel-ordered per-route rows -> (batch, K, C, L) route order (index -1 reads 0).

    A (batch, C, P) map shared by all routes may be given instead (broadcast over K).
    """
    if t.dim() == 3:
        t = t.unsqueeze(1).expand(-1, route_index.shape[0], -1, -1)
    batch, routes, channels, _ = t.shape
    idx = route_index.clamp_min(0).to(t.device)
    out = torch.gather(t, 3, idx[None, :, None, :].expand(batch, routes, channels, -1))
    valid = (route_index >= 0).to(t.device)
    return out * valid[None, :, None, :].to(out.dtype)


def scatter_routes(y: torch.Tensor, route_index: torch.Tensor, pixels: int) -> torch.Tensor:
    """(batch, K, C, L) route outputs -> (batch, C, P): summed onto their pixels (padding steps dropped)."""
    batch, routes, channels, length = y.shape
    valid = (route_index >= 0).to(y.device)
    idx = route_index.clamp_min(0).to(y.device)
    y = y * valid[None, :, None, :].to(y.dtype)
    out = y.new_zeros(batch, channels, pixels)
    flat_idx = idx[None, None, :, :].expand(batch, channels, routes, length).reshape(batch, channels, -1)
    return out.scatter_add(2, flat_idx, y.transpose(1, 2).reshape(batch, channels, -1))


def check_route_map(route_index: torch.Tensor, pixels: int, what: str = "route_index") -> None:
    """Raise ``ValueError`` unless every entry of the (K, L) map is -1 or a pixel in [0, pixels) and no
    route visits a pixel twice (the fused kernel adds each route's output onto its pixels without atomics).

    Reads the map on the host (a device sync for a CUDA map): validate once, when the map is built.
    """
    if route_index.numel() == 0:
        return
    idx = route_index.detach().to("cpu", torch.int64)
    low, high = int(idx.min()), int(idx.max())
    if low < -1 or high >= pixels:
        raise ValueError(f"{what}: entries must be -1 (padding) or pixels in [0, {pixels}), "
                         f"found values in [{low}, {high}]")
    ordered = torch.sort(idx, dim=1).values
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    if bool(repeated.any()):
        route = int(repeated.any(dim=1).nonzero()[0])
        raise ValueError(f"{what}: route {route} visits a pixel more than once; each route may visit a pixel "
                         "at most once (split it into two routes)")


def _check(x, delta, A, B, C, D, delta_bias, route_index, check_index):
    if x.dim() != 3:
        raise ValueError(f"x must be a pixel-ordered map (batch, D, P), got shape {tuple(x.shape)}")
    if route_index.dim() != 2 or route_index.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"route_index must be an integer (K, L) tensor, got {route_index.dtype} "
                         f"{tuple(route_index.shape)}")
    batch, dim, pixels = x.shape
    routes = route_index.shape[0]
    if delta.shape != (batch, routes * dim, pixels):
        raise ValueError(f"delta must be (batch, K*D, P)={(batch, routes * dim, pixels)} in pixel order, "
                         f"got {tuple(delta.shape)}")
    n_state = A.shape[-1]
    if A.shape != (routes * dim, n_state):
        raise ValueError(f"A must be (K*D, N)={(routes * dim, n_state)}, got {tuple(A.shape)}")
    for name, t in (("B", B), ("C", C)):
        if t.shape != (batch, routes, n_state, pixels):
            raise ValueError(f"{name} must be (batch, K, N, P)={(batch, routes, n_state, pixels)} in pixel order, "
                             f"got {tuple(t.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (routes * dim,):
            raise ValueError(f"{name} must be (K*D,)={(routes * dim,)}, got {tuple(t.shape)}")
    if check_index:
        check_route_map(route_index, pixels)


def selective_scan_routes(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    *,
    route_index: torch.Tensor,
    backend: str = "auto",
    fused: Optional[bool] = None,
    deterministic: bool = False,
    check_index: bool = True,
) -> torch.Tensor:
    """Selective scan of K routes through one map, merged back onto the map.

    Args:
        x: (batch, D, P) the map (P pixels, e.g. H*W row-major), shared by the routes.
        delta: (batch, K*D, P) per-route Δ in pixel order (route k: rows k*D .. k*D+D-1).
        A: (K*D, N); B, C: (batch, K, N, P) in pixel order; D, delta_bias: (K*D,).
        route_index: (K, L) integer; ``route_index[k, s]`` is the pixel read at step s of
            route k, or -1 for a padding step (reads zeros, still decays the state).
        backend: as :func:`selective_scan`.
        fused: use the fused Triton kernel (default: when the backend is Triton).
        deterministic: no float atomics anywhere in the backward (the fused path merges
            the routes without atomics in any case).
        check_index: validate ``route_index`` (entries in range, no pixel twice on one
            route) on the host, which synchronises with the device; pass False for a map
            validated once already, such as a :class:`ScanPattern`'s cached route map.
    Returns:
        y: (batch, D, P) float32, ``y[:, :, p] = sum over routes k and steps s with
        route_index[k, s] == p of the route's output``.
    """
    _check(x, delta, A, B, C, D, delta_bias, route_index, check_index)
    resolved = resolve_backend(backend, x.device)
    if fused is None:
        fused = resolved == "triton"
    if fused:
        if resolved != "triton":
            raise ValueError("fused=True needs the Triton backend")
        from .ops import selective_scan_routes_triton

        return selective_scan_routes_triton(x, delta, A, B, C, D, delta_bias,
                                            route_index.to(device=x.device, dtype=torch.int32).contiguous(),
                                            delta_softplus, deterministic)
    resolved = native_or_chunked(backend, resolved, x, delta, A, B, C, D, delta_bias)
    if resolved == "native":  # reads the routes from the map and merges in place, as the fused kernel
        return scan_routes_native(x, delta, A, B, C, D, delta_bias, delta_softplus, route_index)
    batch, dim, pixels = x.shape
    routes, length = route_index.shape
    u = gather_routes(x, route_index).reshape(batch, routes * dim, length)
    dt = gather_routes(delta.reshape(batch, routes, dim, pixels), route_index).reshape(batch, routes * dim, length)
    Bs = gather_routes(B, route_index)
    Cs = gather_routes(C, route_index)
    ys = selective_scan(u, dt, A, Bs, Cs, D, None, delta_bias, delta_softplus, out_dtype=torch.float32,
                        backend=resolved, deterministic=deterministic)
    return scatter_routes(ys.view(batch, routes, dim, length), route_index, pixels)
