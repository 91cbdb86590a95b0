"""Triton passes of the wavelet scan pattern's block-local (Haar) windows, for inference.

With two-tap filters every coefficient window of a ``levels``-level packet transform depends on one
``s x s`` block of pixels only (``s = 2**levels``), through one ``(S, S)`` matrix ``K`` (``S = s*s``, see
``WaveletScan.window_kernel``).  The fused SS2D core reads its routes from a *source map*: the pixels
(H*W rows) followed by the coefficient windows (L = Hp*Wp rows, Hp, Wp padded up to multiples of s),
one row of channels each; its merged output has the same rows.  In PyTorch the source map costs a
pad, a reordering copy, a small matmul and a concatenation, and the merge a matmul, a reordering
copy, a crop and an add.  Here one program per (window, channel tile, batch row) does each in one pass:

* :func:`haar_source_map_triton`: reads the block's S pixel rows (zeros outside the map), writes them
  to the source map's pixel rows and ``K @ block`` to the window's S coefficient rows;
* :func:`haar_merge_triton`: reads the window's S output rows and the block's S pixel-row outputs,
  writes ``pixel rows + K^T @ window rows`` to the block's pixels (those inside the map).

Both run ``K`` as a 16 x 16 ``tl.dot`` in full fp32 precision (two levels, S = 16; the entries are
+-1/4, exact).  Forward only: training keeps the differentiable PyTorch ops.  References: the
PyTorch methods ``windows_from_pixels`` / ``pixels_from_windows`` of ``WaveletScan``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import CachedLauncher

__all__ = ["haar_source_map_triton", "haar_merge_triton", "WINDOW_SIZE"]

#: coefficients per window the kernels take (two packet levels: a 4 x 4 block, 16 subbands)
WINDOW_SIZE = 16
_SIDE = 4
_BLOCK_D = 64


@triton.jit
def _window_tile(H, W, D, n_wj, SIDE: tl.constexpr, S: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's window, channels and batch row: (window, channels d, batch row b, pixel row of each of
    the window's S block positions, mask of d, mask of (position inside the map, d))."""
    pid_w = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    b = tl.program_id(2).to(tl.int64)
    k = tl.arange(0, S)
    row = (pid_w // n_wj) * SIDE + k // SIDE
    col = (pid_w % n_wj) * SIDE + k % SIDE
    inside = (row < H) & (col < W)
    mask_d = d < D
    return pid_w, d, b, (row * W + col).to(tl.int64), mask_d, inside[:, None] & mask_d[None, :]


@triton.jit
def _haar_source_map_kernel(x_ptr, k_ptr, src_ptr, H, W, D, n_wj, rows,
                            SIDE: tl.constexpr, S: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_w, d, b, pix, mask_d, mask = _window_tile(H, W, D, n_wj, SIDE, S, BLOCK_D)
    block = tl.load(x_ptr + (b * H * W + pix[:, None]) * D + d[None, :], mask=mask, other=0.0)
    src = src_ptr + b * rows * D
    tl.store(src + pix[:, None] * D + d[None, :], block, mask=mask)
    k = tl.arange(0, S)
    kernel = tl.load(k_ptr + k[:, None] * S + k[None, :])  # (coefficient, block position)
    coeffs = tl.dot(kernel, block.to(tl.float32), input_precision="ieee")
    window_rows = (H * W + pid_w * S + k).to(tl.int64)
    tl.store(src + window_rows[:, None] * D + d[None, :], coeffs.to(src_ptr.dtype.element_ty), mask=mask_d[None, :])


@triton.jit
def _haar_merge_kernel(y_ptr, k_ptr, out_ptr, H, W, D, n_wj, rows,
                       SIDE: tl.constexpr, S: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_w, d, b, pix, mask_d, mask = _window_tile(H, W, D, n_wj, SIDE, S, BLOCK_D)
    k = tl.arange(0, S)
    y = y_ptr + b * rows * D
    window_rows = (H * W + pid_w * S + k).to(tl.int64)
    window = tl.load(y + window_rows[:, None] * D + d[None, :], mask=mask_d[None, :], other=0.0).to(tl.float32)
    kernel_t = tl.load(k_ptr + k[None, :] * S + k[:, None])  # (block position, coefficient): K^T
    pixels = tl.dot(kernel_t, window, input_precision="ieee")
    pixels += tl.load(y + pix[:, None] * D + d[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + (b * H * W + pix[:, None]) * D + d[None, :], pixels.to(out_ptr.dtype.element_ty), mask=mask)


_launch_haar_source_map = CachedLauncher(_haar_source_map_kernel)
_launch_haar_merge = CachedLauncher(_haar_merge_kernel)


def _windows(height: int, width: int) -> tuple:
    n_wi, n_wj = -(-height // _SIDE), -(-width // _SIDE)
    return n_wi * n_wj, n_wj


def _check_kernel(kernel: Tensor) -> Tensor:
    if tuple(kernel.shape) != (WINDOW_SIZE, WINDOW_SIZE):
        raise ValueError(f"the Haar window kernels take a (16, 16) window kernel (two levels), got {tuple(kernel.shape)}")
    return kernel.to(torch.float32).contiguous()


def haar_source_map_triton(x: Tensor, kernel: Tensor, height: int, width: int) -> Tensor:
    """The fused core's source map of a channels-last map (no autograd).

    Args:
        x: (B, H*W, D) contiguous pixel rows.
        kernel: (16, 16) window kernel (coefficient, block position) of a two-level Haar transform.
        height, width: the map's size.
    Returns:
        (B, H*W + Hp*Wp, D) in x's dtype: the pixel rows, then the coefficient windows in window order.
    """
    batch, pixels, dim = x.shape
    if pixels != height * width or not x.is_contiguous():
        raise ValueError(f"haar_source_map_triton: x must be contiguous (B, H*W={height * width}, D), "
                         f"got shape {tuple(x.shape)} with strides {x.stride()}")
    n_windows, n_wj = _windows(height, width)
    rows = pixels + n_windows * WINDOW_SIZE
    src = torch.empty(batch, rows, dim, device=x.device, dtype=x.dtype)
    grid = (n_windows, triton.cdiv(dim, _BLOCK_D), batch)
    _launch_haar_source_map[grid](x, _check_kernel(kernel), src, height, width, dim, n_wj, rows,
                                  SIDE=_SIDE, S=WINDOW_SIZE, BLOCK_D=_BLOCK_D, num_warps=4)
    return src


def haar_merge_triton(y: Tensor, kernel: Tensor, height: int, width: int) -> Tensor:
    """Fold the fused core's output rows back onto the map (no autograd).

    Args:
        y: (B, H*W + Hp*Wp, D) contiguous output rows (pixel rows, then coefficient windows).
        kernel: as in :func:`haar_source_map_triton`.
        height, width: the map's size.
    Returns:
        (B, H, W, D) in y's dtype: each pixel's row plus the inverse transform of the windows.
    """
    batch, rows, dim = y.shape
    n_windows, n_wj = _windows(height, width)
    if rows != height * width + n_windows * WINDOW_SIZE or not y.is_contiguous():
        raise ValueError(f"haar_merge_triton: y must be contiguous (B, H*W + windows*16 = "
                         f"{height * width + n_windows * WINDOW_SIZE}, D), got shape {tuple(y.shape)} "
                         f"with strides {y.stride()}")
    out = torch.empty(batch, height, width, dim, device=y.device, dtype=y.dtype)
    grid = (n_windows, triton.cdiv(dim, _BLOCK_D), batch)
    _launch_haar_merge[grid](y, _check_kernel(kernel), out, height, width, dim, n_wj, rows,
                             SIDE=_SIDE, S=WINDOW_SIZE, BLOCK_D=_BLOCK_D, num_warps=4)
    return out
