"""The SS2D mixer core fused into the selective-scan kernel (gather patterns: Triton on GPUs, and the
native C kernel for CPU inference).

The unfused core materialises the routes::

    xs = pattern.scan(x)                                   (B, K, D, L) copy
    dts, Bs, Cs = x_proj(xs) ... ; ys = selective_scan(xs, ...)   (B, K, D, L) output
    y = pattern.merge(ys)                                  (B, D, H, W)

Because ``x_proj`` and ``dt_projs`` act on each pixel, they can run on the map
in pixel order instead; the kernel then gathers each route's steps through the
pattern's route index and adds every output straight onto the merged map, so
neither (B, K, D, L) tensor exists.  For a padding step (index -1) both paths
read zeros, so Δ there is softplus(delta_bias) in both.  Δ itself (K*D values
per pixel, the widest tensor of the core) is not kept for the backward: the
backward recomputes it from the K*R-wide ``dt_rank`` features with one GEMM.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from vmamba_zoo_kernels import selective_scan_routes
from vmamba_zoo_kernels.dispatch import native_or_chunked, resolve_backend
from vmamba_zoo_kernels.native_cpu import scan_routes_native
from vmamba_zoo_kernels.ops import selective_scan_routes_projected_triton

from .linear import linear
from .param_cache import cached_derived

__all__ = ["ss2d_core_fused", "can_fuse", "core_weights", "block_diagonal", "diagonal_blocks"]


def diagonal_blocks(matrix: torch.Tensor, blocks: int) -> torch.Tensor:
    """(K*D, K*R) -> (K, D, R): the diagonal blocks of a block-diagonal-shaped matrix (a view)."""
    rows, cols = matrix.shape[0] // blocks, matrix.shape[1] // blocks
    return torch.diagonal(matrix.view(blocks, rows, blocks, cols), dim1=0, dim2=2).permute(2, 0, 1)


def block_diagonal(weight: torch.Tensor, dtype: Optional[torch.dtype] = None,
                   block_cols: Optional[int] = None) -> torch.Tensor:
    """(K, D, R) -> (K*D, K*R) block-diagonal matrix in ``dtype`` (default: weight's), in two kernels (unlike
    ``torch.block_diag``).  With ``block_cols`` (>= R) each diagonal block is (D, block_cols) with ``weight``
    in its first R columns and zeros after: (K*D, K*block_cols), a matrix that multiplies rows holding R
    features followed by block_cols - R others per route (e.g. whole x_proj output rows)."""
    routes, dim, rank = weight.shape
    cols = rank if block_cols is None else block_cols
    if cols < rank:
        raise ValueError(f"block_diagonal: block_cols ({cols}) must be at least the weight's last dimension ({rank})")
    out = weight.new_zeros(routes * dim, routes * cols, dtype=dtype or weight.dtype)
    diagonal_blocks(out, routes)[..., :rank].copy_(weight)
    return out


def core_weights(mixer: nn.Module, dtype: torch.dtype):
    """(x_proj weight (K*(R+2N), D) in ``dtype``, block-diagonal dt weight (K*D, K*R) in ``dtype``,
    A = -exp(A_logs) fp32) of an SS2D-style mixer: what the pixel-major core multiplies by.

    Reused across inference calls while the parameters are unchanged
    (:func:`~vmamba_zoo.layers.param_cache.cached_derived`; recomputed while autograd is on)."""
    routes, width_dbl, dim = mixer.x_proj_weight.shape

    def make():
        return (mixer.x_proj_weight.reshape(routes * width_dbl, dim).to(dtype),
                block_diagonal(mixer.dt_projs_weight, dtype),
                -torch.exp(mixer.A_logs.float()))

    return cached_derived(mixer, ("core_weights", dtype), [mixer.x_proj_weight, mixer.dt_projs_weight,
                                                            mixer.A_logs], make)


def can_fuse(mixer: nn.Module, x: torch.Tensor) -> bool:
    """Whether a fused kernel suits ``mixer``'s core for input ``x``: a pattern that supports it
    (``supports_fused_core``: gather patterns without state fusion, the wavelet pattern), and either
    CUDA with Triton and a pixel-major (channels-last) map, whose route gathers read contiguous channel
    vectors (a channel-first map would be gathered with a stride of W along column
    routes), or the CPU where the native kernel can run (no autograd graph needed; a channel-first map
    costs one transposing copy there)."""
    from vmamba_zoo_kernels.dispatch import triton_available
    from vmamba_zoo_kernels.native_cpu import native_usable

    if not mixer.scan_pattern.supports_fused_core():
        return False
    if x.is_cuda:
        return triton_available() and x.is_contiguous(memory_format=torch.channels_last)
    return native_usable(x, mixer.x_proj_weight, mixer.dt_projs_weight, mixer.dt_projs_bias, mixer.A_logs,
                         mixer.Ds)


def ss2d_core_fused(mixer: nn.Module, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Fused scan + selective scan + merge of an SS2D-style mixer.

    Everything runs pixel-major: ``x_proj`` is one GEMM over the pixels, the K
    ``dt_projs`` are one GEMM with a block-diagonal weight, and the kernel reads
    each step's channels as one contiguous vector whatever the route's order
    (coalesced for column-major and reversed routes too).  The merged output
    is written in the same pixel-major layout.

    Args:
        mixer: a module with ``scan_pattern`` (gather pattern), ``x_proj_weight`` (K, R+2N, D),
            ``dt_projs_weight`` (K, D, R), ``dt_projs_bias`` (K, D), ``A_logs`` (K*D, N), ``Ds`` (K*D,),
            ``d_state`` and ``dt_rank``.
        x: (B, D, H, W) after the depth-wise conv and activation; fastest in channels-last memory
            (a permuted (B, H, W, D) tensor), which costs no copy.
    Returns:
        (B, D, H, W) float32, equal to the unfused core's output; in channels-last memory for gather
        patterns (the pattern's :meth:`fused_core_merge` decides).
    """
    batch, dim, height, width = x.shape
    pattern = mixer.scan_pattern
    n, r = mixer.d_state, mixer.dt_rank
    route_index = pattern.fused_core_index(height, width, x.device)  # validated when built
    routes = route_index.shape[0]
    width_dbl = r + 2 * n
    x_pm = x.permute(0, 2, 3, 1).reshape(batch, height * width, dim)  # pixel-major; a view for channels-last input
    x_pm = pattern.fused_core_map(x_pm, height, width)  # what the routes read: the map itself for gather patterns
    pixels = x_pm.shape[1]
    x_proj_weight, dt_weight, A = core_weights(mixer, x.dtype)  # reused across inference calls
    x_dbl = linear(x_pm, x_proj_weight).view(batch, pixels, routes, width_dbl)
    dt_features = x_dbl[..., :r]  # (B, P, K, R) view
    bs = x_dbl[..., r:r + n].permute(0, 2, 3, 1)  # (B, K, N, P) views, no copies
    cs = x_dbl[..., r + n:].permute(0, 2, 3, 1)
    Ds, dt_bias = mixer.Ds.float(), mixer.dt_projs_bias.float().reshape(-1)
    x_map = x_pm.transpose(1, 2)  # (B, D, P) with pixel-major strides
    resolved = resolve_backend(backend, x.device)
    if resolved == "triton":
        # Δ = dt_in @ dt_weight.T (B, P, K*D) is made inside and recomputed in the backward, not saved
        dt_in = dt_features.reshape(batch, pixels, routes * r)
        y = selective_scan_routes_projected_triton(x_map, dt_in, dt_weight, A, bs, cs, Ds, dt_bias, route_index,
                                                   True, False)
    elif native_or_chunked(backend, resolved, x, x_dbl, mixer.dt_projs_weight, A, Ds, dt_bias) == "native":
        # per-route dt projections (one bmm, not the block-diagonal GEMM), routes read from the map, merged in C
        y = scan_routes_native(x_map, dt_features, A, bs, cs, Ds, dt_bias, True, route_index,
                               dt_weight=mixer.dt_projs_weight)
    else:
        dts = F.linear(dt_features.reshape(batch, pixels, routes * r), dt_weight)  # (B, P, K*D)
        y = selective_scan_routes(x_map, dts.transpose(1, 2), A, bs, cs, Ds, dt_bias, True, route_index=route_index,
                                  backend=backend, fused=False, check_index=False)
    return pattern.fused_core_merge(y, height, width)
