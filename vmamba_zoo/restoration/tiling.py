"""Tiled inference for restoration networks: bounded memory, no seams.

A large image is cut into overlapping tiles; each tile is restored on its own and the
results are blended with per-tile weight windows into an output buffer.  Only one batch
of tiles is alive inside the network at a time, so peak memory is that of a
``tile_size`` forward plus the (input and output sized) accumulation buffers.

Weight window, per tile edge that lies *inside* the image (edges on the image border get
no taper): the outermost ``overlap // 4`` pixels get weight 0 (they are the pixels a
convolutional network computes from zero padding instead of from the neighbouring
content), the next ``overlap // 2`` pixels ramp linearly up to 1, the rest is 1.  So

* a network whose receptive field radius is at most ``overlap // 4`` input pixels (for
  instance a stack of 3x3 convolutions) gives exactly the full-image result (up to float
  rounding) everywhere;
* a network with a larger receptive field (state-space scans are global) gives a result
  cross-faded smoothly between tiles over ``overlap // 2`` pixels, without seams.

Accumulation runs in float64 by default, so a pointwise network gives bit-identical
float32 results (``accumulate_dtype=torch.float32`` halves the buffers for huge outputs).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["tile_starts", "blend_window_1d", "tiled_forward", "pad_to_multiple", "forward_padded"]


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)``, consecutive tiles
    overlapping by at least ``overlap``; the last tile ends on the border."""
    if tile >= length:
        return [0]
    step = tile - overlap
    if step <= 0:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile size ({tile})")
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def blend_window_1d(length: int, taper_start: bool, taper_end: bool, overlap: int,
                    dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Weights (length,) of one tile axis: 0 for ``overlap // 4`` pixels at a tapered
    edge, a linear ramp over ``overlap // 2`` pixels, then 1."""
    w = torch.ones(length, dtype=dtype, device=device)
    zero, ramp = overlap // 4, overlap // 2
    d = torch.arange(length, dtype=dtype, device=device)
    profile = ((d - zero + 1) / (ramp + 1)).clamp(0.0, 1.0) if overlap > 0 else torch.ones_like(d)
    if taper_start:
        w = torch.minimum(w, profile)
    if taper_end:
        w = torch.minimum(w, profile.flip(0))
    return w


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pad (B, C, H, W) at the bottom/right up to multiples of ``multiple``.

    Returns:
        the padded tensor and the original (H, W).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        if mode == "reflect" and (ph >= h or pw >= w):
            mode = "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def forward_padded(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int = 1,
                   multiple: int = 1) -> torch.Tensor:
    """``net(x)`` with (B, C, H, W) input reflect-padded to a multiple of ``multiple`` and the
    (B, C', H*scale, W*scale) output cropped back."""
    xp, (h, w) = pad_to_multiple(x, multiple) if multiple > 1 else (x, x.shape[-2:])
    y = net(xp)
    return y[..., : h * scale, : w * scale]


@torch.no_grad()
def tiled_forward(
    net: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile_size: int = 256,
    overlap: int = 32,
    scale: int = 1,
    multiple: int = 1,
    tile_batch_size: int = 1,
    output_device: Optional[torch.device] = None,
    accumulate_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Run ``net`` on overlapping tiles of ``x`` and blend the outputs without seams.

    Args:
        net: maps (N, C, h, w) to (N, C_out, h*scale, w*scale).
        x: (B, C, H, W) input.
        tile_size: tile side in input pixels (tiles are clipped to the image).
        overlap: input pixels shared by neighbouring tiles (see the module docstring;
            exact for receptive-field radius <= ``overlap // 4``).
        scale: output/input size ratio of ``net`` (SR factor; 1 for denoising).
        multiple: tiles are reflect-padded to a multiple of this (U-Nets, windows).
        tile_batch_size: tiles run through ``net`` together (memory vs speed).
        output_device: where the output buffer lives (default: ``x.device``); put it on
            the CPU to restore images larger than the accelerator memory.
        accumulate_dtype: dtype of the blending buffers (an output-sized one and a
            one-channel weight map).  float64 makes pointwise networks bit-exact; pass
            ``torch.float32`` to halve their memory for very large outputs.

    Returns:
        (B, C_out, H*scale, W*scale) tensor of ``x``'s dtype on ``output_device``.
    """
    if x.dim() != 4:
        raise ValueError(f"tiled_forward expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if tile_size < 1 or overlap < 0 or scale < 1 or tile_batch_size < 1:
        raise ValueError("tile_size, scale and tile_batch_size must be positive and overlap non-negative")
    b, _, h, w = x.shape
    out_device = output_device if output_device is not None else x.device
    th, tw = min(tile_size, h), min(tile_size, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    boxes = [(y0, x0) for y0 in ys for x0 in xs]

    out: Optional[torch.Tensor] = None
    weight = torch.zeros(1, 1, h * scale, w * scale, dtype=accumulate_dtype, device=out_device)
    for i in range(0, len(boxes), tile_batch_size):
        chunk = boxes[i : i + tile_batch_size]
        tiles = torch.cat([x[:, :, y0 : y0 + th, x0 : x0 + tw] for y0, x0 in chunk], dim=0)
        pred = forward_padded(net, tiles, scale, multiple)
        if pred.shape[-2:] != (th * scale, tw * scale):
            raise ValueError(f"net output {tuple(pred.shape[-2:])} is not the tile {th}x{tw} times scale={scale}")
        if out is None:
            out = torch.zeros(b, pred.shape[1], h * scale, w * scale, dtype=accumulate_dtype, device=out_device)
        for k, (y0, x0) in enumerate(chunk):
            wy = blend_window_1d(th * scale, y0 > 0, y0 + th < h, overlap * scale, accumulate_dtype, out_device)
            wx = blend_window_1d(tw * scale, x0 > 0, x0 + tw < w, overlap * scale, accumulate_dtype, out_device)
            win = (wy[:, None] * wx[None, :])[None, None]
            ys_, xs_ = slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale)
            out[:, :, ys_, xs_] += pred[k * b : (k + 1) * b].to(out_device, accumulate_dtype) * win
            weight[:, :, ys_, xs_] += win
    assert out is not None
    if not bool((weight > 0).all()):
        raise RuntimeError("internal error: a pixel received no tile weight")
    return (out / weight).to(x.dtype)

