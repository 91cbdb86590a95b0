"""Triton depth-wise 3x3 convolution of channels-last maps, with its epilogue, for inference.

``y = act(conv3x3_depthwise(x) + bias) (+ x)``, zero padding 1, stride 1.  On a channels-last map
cuDNN's depth-wise kernel does not add the bias itself: PyTorch adds it in a separate broadcast
pass, then the block adds the residual (Spatial-Mamba's ``x + cpe(x)``) or applies SiLU (SS2D) in
another.  Here one program reads a [BLOCK_W pixels x BLOCK_C channels] tile of one row for each of
the nine taps (channels contiguous: coalesced), accumulates in fp32 with fp32 weights and writes
the result once, in x's dtype.

Forward only: used where no gradient is needed.  Reference: ``F.conv2d(x, w, b, padding=1,
groups=C)`` (then ``F.silu`` / ``+ x``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import CachedLauncher

__all__ = ["dwconv3x3_channels_last_triton"]

#: (BLOCK_W, BLOCK_C, num_warps).  H200 sweep of 10 tiles (batch 128, bf16; benchmarks/dwconv_tiles_h200.json)
#: over five layer shapes (C64 56x56 + residual, C128 56x56 + SiLU, C256 14x14 + residual, C512 28x28
#: + SiLU, C128 28x28 + residual): 0.473 ms in all for (16, 128, 4), 0.919 ms for the first guess
#: (8, 64, 4); cuDNN's convolution alone (its bias, SiLU and residual passes not counted) 0.952 ms.
DEFAULT_TILES = (16, 128, 4)


@triton.jit
def _dwconv3x3_kernel(x_ptr, w_ptr, b_ptr, y_ptr, H, W, C,
                      stride_xb, stride_xh, stride_xw,
                      HAS_BIAS: tl.constexpr, SILU: tl.constexpr, RESIDUAL: tl.constexpr,
                      BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_row = tl.program_id(0)  # (b, h, w-tile)
    pid_c = tl.program_id(1)
    w_tiles = tl.cdiv(W, BLOCK_W)
    bh = pid_row // w_tiles
    w0 = (pid_row % w_tiles) * BLOCK_W
    b = (bh // H).to(tl.int64)
    h = bh % H
    ws = w0 + tl.arange(0, BLOCK_W)
    cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = cs < C
    mask_w = ws < W
    x_base = x_ptr + b * stride_xb + cs[None, :]
    acc = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    for ky in tl.static_range(3):
        hh = h + ky - 1
        row_ok = (hh >= 0) & (hh < H)
        for kx in tl.static_range(3):
            ww = ws + kx - 1
            m = (row_ok & (ww >= 0) & (ww < W))[:, None] & mask_c[None, :]
            v = tl.load(x_base + hh.to(tl.int64) * stride_xh + ww.to(tl.int64)[:, None] * stride_xw, mask=m, other=0.0)
            k = tl.load(w_ptr + cs * 9 + (ky * 3 + kx), mask=mask_c, other=0.0)
            acc += v.to(tl.float32) * k[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + cs, mask=mask_c, other=0.0)[None, :]
    if SILU:
        acc = acc / (1.0 + tl.exp(-acc))
    mask = mask_w[:, None] & mask_c[None, :]
    if RESIDUAL:
        centre = tl.load(x_base + h.to(tl.int64) * stride_xh + ws.to(tl.int64)[:, None] * stride_xw, mask=mask,
                         other=0.0)
        acc += centre.to(tl.float32)
    out = y_ptr + ((b * H + h) * W + ws.to(tl.int64))[:, None] * C + cs[None, :]
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=mask)


_launch_dwconv3x3 = CachedLauncher(_dwconv3x3_kernel)


def dwconv3x3_channels_last_triton(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, silu: bool = False,
                                   residual: bool = False, out_dtype: Optional[torch.dtype] = None,
                                   tiles: Optional[Tuple[int, int, int]] = None) -> Tensor:
    """``act(F.conv2d(x, weight, bias, padding=1, groups=C)) (+ x)`` for a channels-last ``x`` (no autograd).

    Args:
        x: (B, C, H, W) whose channels are contiguous (stride 1; a permuted (B, H, W, C) tensor or a
            channel slice of one); any pixel strides.
        weight: (C, 1, 3, 3); bias: (C,) or None.  Read in float32.
        silu: apply SiLU after the bias.
        residual: add ``x`` after the activation.
        out_dtype: the result's dtype (default: x's).
        tiles: (BLOCK_W, BLOCK_C, num_warps) instead of :data:`DEFAULT_TILES`.
    Returns:
        (B, C, H, W) in ``out_dtype``, a view of a contiguous (B, H, W, C) tensor.
    """
    batch, channels, height, width = x.shape
    if tuple(weight.shape) != (channels, 1, 3, 3):
        raise ValueError(f"dwconv3x3_channels_last_triton: weight must be (C, 1, 3, 3) = ({channels}, 1, 3, 3), "
                         f"got {tuple(weight.shape)}")
    if x.stride(1) != 1:
        raise ValueError("dwconv3x3_channels_last_triton: x must have contiguous channels (channels-last); "
                         "convert with x.contiguous(memory_format=torch.channels_last)")
    taps = weight.detach().reshape(channels, 9).to(torch.float32).contiguous()
    bias32 = bias.detach().to(torch.float32).contiguous() if bias is not None else taps
    y = torch.empty(batch, height, width, channels, device=x.device, dtype=out_dtype or x.dtype)
    block_w, block_c, num_warps = tiles if tiles is not None else DEFAULT_TILES
    grid = (batch * height * triton.cdiv(width, block_w), triton.cdiv(channels, block_c))
    _launch_dwconv3x3[grid](x, taps, bias32, y, height, width, channels, x.stride(0), x.stride(2), x.stride(3),
                            HAS_BIAS=bias is not None, SILU=silu, RESIDUAL=residual,
                            BLOCK_W=block_w, BLOCK_C=block_c, num_warps=num_warps)
    return y.permute(0, 3, 1, 2)
