"""Triton read-out of Spatial-Mamba's structure-aware state fusion (SASF), for inference.

With one raster route and d_state 1, the SASF mixer's core after the scan is::

    h'[b, d] = sum_i sum_{ky, kx} taps[d, i, ky, kx] * h[b, d, clamp(r + (ky-1)*dil_i), clamp(c + (kx-1)*dil_i)]
    y[b, d, l] = C[b, l] * h'[b, d, l] + D[d] * u[b, d, l]

(``taps[:, i] = alpha_i * kernel_i``; clamping the indices is the replicate padding of the
official code).  PyTorch runs this as a replicate pad, one depth-wise convolution per dilation
(or the merged 11 x 11 kernel, which cuDNN does not take and PyTorch runs in a generic kernel),
an einsum and an add: five passes and three temporaries.  Here one program takes a tile of
pixels x channels (oriented by the layout of u, see the tile constants), gathers the 27 taps of
the states (cache hits after the first), applies C and D and writes y channels-last, the layout
the mixer's LayerNorm reads next.

Forward only: used where no gradient is needed; training keeps the differentiable convolutions.
PyTorch reference: :func:`vmamba_zoo_kernels.reference.sasf_readout_ref`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import CachedLauncher

__all__ = ["sasf_readout_triton"]

#: (BLOCK_P, BLOCK_D, channels vary fastest between threads), chosen by the layout of u (the states h
#: come channel-major from the scan).  H200, batch 128, D256 56x56 / D1024 14x14, bf16 u, ms:
#: pixel-major u: (16, 64, True) 1.33 / 0.35, (64, 32, False) 21.6 / 6.95 (the convolution path: 7.9 / 2.4);
#: channel-major u: (128, 16, False) 1.56 / 0.36, (16, 64, True) 5.51 / 0.46.  Some other tiles ran 10-20x
#: slower than these (e.g. (32, 64, True): 30 ms), so the two are fixed rather than derived.
PIXEL_MAJOR_TILES = (16, 64, True)
CHANNEL_MAJOR_TILES = (128, 16, False)


@triton.jit
def _dilated_taps(acc, h_base, stride_hl, taps_ptr, dd, mask_d, mask, row, col, H, W,
                  TAP0: tl.constexpr, DIL: tl.constexpr):
    # 3x3 taps at offsets {-DIL, 0, DIL}; indices clamped (replicate padding).  dd, row and col are
    # broadcastable 2-D index tensors of the tile's orientation.
    for ky in tl.static_range(3):
        rr = tl.minimum(tl.maximum(row + (ky - 1) * DIL, 0), H - 1)
        for kx in tl.static_range(3):
            cc = tl.minimum(tl.maximum(col + (kx - 1) * DIL, 0), W - 1)
            w = tl.load(taps_ptr + dd * 27 + (TAP0 + ky * 3 + kx), mask=mask_d, other=0.0)
            v = tl.load(h_base + (rr * W + cc).to(tl.int64) * stride_hl, mask=mask, other=0.0)
            acc += w * v.to(tl.float32)
    return acc


@triton.jit
def sasf_readout_kernel(h_ptr, c_ptr, u_ptr, dskip_ptr, taps_ptr, y_ptr,
                        D, H, W,
                        stride_hb, stride_hd, stride_hl, stride_cb, stride_cl, stride_ub, stride_ud, stride_ul,
                        DIL0: tl.constexpr, DIL1: tl.constexpr, DIL2: tl.constexpr,
                        BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr, D_FAST: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    L = H * W
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    # the tile is [pixels, channels] (channels vary fastest between threads) or [channels, pixels]
    if D_FAST:
        pp = p[:, None]
        dd = d[None, :]
        acc = tl.zeros((BLOCK_P, BLOCK_D), dtype=tl.float32)
    else:
        pp = p[None, :]
        dd = d[:, None]
        acc = tl.zeros((BLOCK_D, BLOCK_P), dtype=tl.float32)
    mask_p = pp < L
    mask_d = dd < D
    mask = mask_p & mask_d
    row = pp // W
    col = pp % W
    h_base = h_ptr + b * stride_hb + dd.to(tl.int64) * stride_hd
    acc = _dilated_taps(acc, h_base, stride_hl, taps_ptr, dd, mask_d, mask, row, col, H, W, 0, DIL0)
    acc = _dilated_taps(acc, h_base, stride_hl, taps_ptr, dd, mask_d, mask, row, col, H, W, 9, DIL1)
    acc = _dilated_taps(acc, h_base, stride_hl, taps_ptr, dd, mask_d, mask, row, col, H, W, 18, DIL2)
    pix = pp.to(tl.int64)
    c = tl.load(c_ptr + b * stride_cb + pix * stride_cl, mask=mask_p, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + b * stride_ub + dd.to(tl.int64) * stride_ud + pix * stride_ul, mask=mask, other=0.0)
    dsk = tl.load(dskip_ptr + dd, mask=mask_d, other=0.0)
    y = acc * c + dsk * u.to(tl.float32)
    # channels-last output: y[b, p, d]
    tl.store(y_ptr + b * L * D + pix * D + dd, y, mask=mask)


_launch_sasf_readout = CachedLauncher(sasf_readout_kernel)


def sasf_readout_triton(h: Tensor, c: Tensor, u: Tensor, d_skip: Tensor, taps: Tensor, height: int, width: int,
                        dilations: Sequence[int], tiles: Optional[Tuple[int, int, bool]] = None) -> Tensor:
    """Fused SASF + read-out (no autograd).

    Args:
        h: (B, D, L) hidden states of the raster scan (L = height*width); any strides (the
            channels-last map of a channels-last trunk reads as it is).
        c: (B, L) the route's C (d_state 1); any strides.
        u: (B, D, L) the scan input (the D skip term); any strides.
        d_skip: (D,) skip weights.
        taps: (D, 3, 3, 3) ``alpha_i * kernel_i`` per dilation i.
        height, width: the map's size.
        dilations: the three dilations (1, 3, 5 in Spatial-Mamba).
        tiles: (BLOCK_P, BLOCK_D, channels vary fastest) instead of the default for u's layout.
    Returns:
        (B, D, L) float32 view of a channels-last (B, L, D) buffer.
    """
    if len(dilations) != 3 or taps.shape[1:] != (3, 3, 3):
        raise ValueError(f"sasf_readout_triton: expected three dilations and (D, 3, 3, 3) taps, "
                         f"got {tuple(dilations)} and {tuple(taps.shape)}")
    batch, dim, length = h.shape
    if length != height * width or c.shape != (batch, length) or u.shape != (batch, dim, length):
        raise ValueError(f"sasf_readout_triton: shapes h {tuple(h.shape)}, c {tuple(c.shape)}, u {tuple(u.shape)} "
                         f"do not fit a {height}x{width} map")
    taps = taps.to(torch.float32).contiguous()
    d_skip = d_skip.to(torch.float32).contiguous()
    out = torch.empty(batch, length, dim, device=h.device, dtype=torch.float32)
    if tiles is None:
        tiles = PIXEL_MAJOR_TILES if dim > 1 and u.stride(1) == 1 else CHANNEL_MAJOR_TILES
    block_p, block_d, d_fast = tiles
    grid = (-(-length // block_p), -(-dim // block_d), batch)
    _launch_sasf_readout[grid](h, c, u, d_skip, taps, out, dim, height, width,
                               *h.stride(), *c.stride(), *u.stride(),
                               DIL0=int(dilations[0]), DIL1=int(dilations[1]), DIL2=int(dilations[2]),
                               BLOCK_D=block_d, BLOCK_P=block_p, D_FAST=d_fast, num_warps=4)
    return out.transpose(1, 2)
