"""Triton read-out of Spatial-Mamba's structure-aware state fusion (SASF), for inference.

With one raster route and d_state 1, the SASF mixer's core after the scan is::

    h'[b, d] = sum_i sum_{ky, kx} taps[d, i, ky, kx] * h[b, d, clamp(r + (ky-1)*dil_i), clamp(c + (kx-1)*dil_i)]
    y[b, d, l] = C[b, l] * h'[b, d, l] + D[d] * u[b, d, l]

(``taps[:, i] = alpha_i * kernel_i``; clamping the indices is the replicate padding of the
official code).  PyTorch runs this as a replicate pad, one depth-wise convolution per dilation
(or the merged 11 x 11 kernel, which cuDNN does not take and PyTorch runs in a generic kernel),
an einsum and an add: five passes and three temporaries.  Here one program reads a
[BLOCK_D x BLOCK_P] tile of states, gathers the 27 taps (cache hits after the first), applies
C and D and writes y channels-last, the layout the mixer's LayerNorm reads next.

Forward only: used where no gradient is needed; training keeps the differentiable convolutions.
PyTorch reference: :func:`vmamba_zoo_kernels.reference.sasf_readout_ref`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["sasf_readout_triton"]

_BLOCK_P = 64
_BLOCK_D = 32


@triton.jit
def _dilated_taps(acc, h_row_ptr, stride_hl, taps_ptr, d_offs, mask_d, mask, row, col, H, W,
                  TAP0: tl.constexpr, DIL: tl.constexpr):
    # 3x3 taps at offsets {-DIL, 0, DIL}; indices clamped (replicate padding)
    for ky in tl.static_range(3):
        rr = tl.minimum(tl.maximum(row + (ky - 1) * DIL, 0), H - 1)
        for kx in tl.static_range(3):
            cc = tl.minimum(tl.maximum(col + (kx - 1) * DIL, 0), W - 1)
            w = tl.load(taps_ptr + d_offs * 27 + (TAP0 + ky * 3 + kx), mask=mask_d, other=0.0)
            v = tl.load(h_row_ptr + (rr * W + cc).to(tl.int64)[None, :] * stride_hl, mask=mask, other=0.0).to(tl.float32)
            acc += w[:, None] * v
    return acc


@triton.jit
def sasf_readout_kernel(h_ptr, c_ptr, u_ptr, dskip_ptr, taps_ptr, y_ptr,
                        D, H, W,
                        stride_hb, stride_hd, stride_hl, stride_cb, stride_cl, stride_ub, stride_ud, stride_ul,
                        DIL0: tl.constexpr, DIL1: tl.constexpr, DIL2: tl.constexpr,
                        BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    L = H * W
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    d_offs = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_p = p < L
    mask_d = d_offs < D
    mask = mask_d[:, None] & mask_p[None, :]
    row = p // W
    col = p % W
    h_row_ptr = h_ptr + b * stride_hb + d_offs[:, None].to(tl.int64) * stride_hd
    acc = tl.zeros((BLOCK_D, BLOCK_P), dtype=tl.float32)
    acc = _dilated_taps(acc, h_row_ptr, stride_hl, taps_ptr, d_offs, mask_d, mask, row, col, H, W, 0, DIL0)
    acc = _dilated_taps(acc, h_row_ptr, stride_hl, taps_ptr, d_offs, mask_d, mask, row, col, H, W, 9, DIL1)
    acc = _dilated_taps(acc, h_row_ptr, stride_hl, taps_ptr, d_offs, mask_d, mask, row, col, H, W, 18, DIL2)
    c = tl.load(c_ptr + b * stride_cb + p.to(tl.int64) * stride_cl, mask=mask_p, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + b * stride_ub + d_offs[:, None].to(tl.int64) * stride_ud + p.to(tl.int64)[None, :] * stride_ul,
                mask=mask, other=0.0).to(tl.float32)
    dsk = tl.load(dskip_ptr + d_offs, mask=mask_d, other=0.0)
    y = acc * c[None, :] + dsk[:, None] * u
    # channels-last output: y[b, p, d]
    tl.store(y_ptr + b * L * D + p[None, :].to(tl.int64) * D + d_offs[:, None], y, mask=mask)


def sasf_readout_triton(h: Tensor, c: Tensor, u: Tensor, d_skip: Tensor, taps: Tensor, height: int, width: int,
                        dilations: Sequence[int]) -> Tensor:
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
    grid = (-(-length // _BLOCK_P), -(-dim // _BLOCK_D), batch)
    sasf_readout_kernel[grid](h, c, u, d_skip, taps, out, dim, height, width,
                  *h.stride(), *c.stride(), *u.stride(),
                  DIL0=int(dilations[0]), DIL1=int(dilations[1]), DIL2=int(dilations[2]),
                  BLOCK_D=_BLOCK_D, BLOCK_P=_BLOCK_P, num_warps=4)
    return out.transpose(1, 2)
