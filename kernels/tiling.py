"""Tile sizes of the Triton kernels (pure Python, so fake/meta implementations need no Triton).

The choices are fixed tables, not autotuning: the chunk length decides where
the forward stores the states that the backward restarts from, and the
rounding of the scan, so it must be identical between runs and between the
two passes.  The tables come from ``tools/tune_scan.py`` sweeps on an H100.
``VMAMBA_ZOO_SCAN_TILES="fwd_bd,bl,fwd_warps,bwd_bd,bwd_warps"`` overrides them
(for tuning).
"""
from __future__ import annotations

import os
from typing import NamedTuple, Optional

__all__ = ["Tiles", "SequentialTiles", "pick_tiles", "pick_sequential_tiles", "num_chunks", "is_pixel_major"]


class Tiles(NamedTuple):
    block_l: int  # time steps per chunk (shared by forward and backward)
    fwd_block_d: int  # channels per forward program
    fwd_warps: int
    bwd_block_d: int  # channels per backward program
    bwd_warps: int


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def _largest_pow2_divisor(n: int, cap: int) -> int:
    d = 1
    while d < cap and n % (d * 2) == 0:
        d *= 2
    return d


def pick_tiles(dim: int, per_group: int, length: int, n_state: int, pixel_major: bool = False) -> Tiles:
    """Tiles for a (dim, group size, L, N) problem.

    Channel tiles are powers of two dividing the group size, so a tile never
    spans two groups of B / C.  ``pixel_major`` (u's channels contiguous, as in
    the fused channels-last core) favours wide channel tiles and short chunks:
    each step then reads one contiguous vector of channels.
    """
    override = os.environ.get("VMAMBA_ZOO_SCAN_TILES")
    if override:
        fbd, bl, fw, bbd, bw = (int(v) for v in override.split(","))
        return Tiles(bl, _largest_pow2_divisor(per_group, fbd), fw, _largest_pow2_divisor(per_group, bbd), bw)
    if pixel_major:
        # H100 sweeps of the fused kernel (cross, batch 128; each program runs every route over its channel
        # tile), 64-step chunks.  Forward: 16 channels x 2 warps, 1.40 / 0.72 / 0.36 / 0.16 ms at
        # D96 56x56 / D192 28x28 / D384 14x14 / D768 7x7 (32 x 8 warps: 1.94 / 0.80 / 0.43 / 0.22).
        # Backward: 8 channels x 2 warps on long routes (3.90 ms at 56x56; 16 channels: 4.70), 16 channels
        # x 2 warps on short ones (1.10 / 0.56 ms at 14x14 / 7x7; 8 channels: 1.33 / 0.78).  Since the
        # backward prefetches the next chunk (tiles of at most 8 elements per thread): 8 x 64 at 56x56 (3.19-3.33
        # ms); with few states 16 x 32 chunks between 64 and 2048 steps (N = 1, D192 28x28: 1.52 ms, 8 x 64:
        # 1.60, 16 x 64: 1.86; D384 14x14, 196 steps: 0.83 ms, 16 x 64: 1.10).  Wide states (N >= 8, which
        # the backward does not prefetch) keep 64-step chunks.
        block_l = min(64, max(16, _next_pow2(length)))
        if 64 < length < 2048 and n_state < SEQUENTIAL_MIN_STATES:
            block_l = 32
        bwd_bd = 8 if length >= 2048 else 16
        return Tiles(block_l, _largest_pow2_divisor(per_group, 16), 2, _largest_pow2_divisor(per_group, bwd_bd), 2)
    # H100 sweep (tools/tune_scan.py, benchmarks/scan_tune_h100.txt): 256-step chunks; one or more rows
    # per warp keeps reductions along time inside a warp
    block_l = min(256, max(16, _next_pow2(length)))
    fwd_bd = _largest_pow2_divisor(per_group, max(1, 2048 // block_l))
    bwd_bd = _largest_pow2_divisor(per_group, max(1, 4096 // block_l))
    return Tiles(block_l, fwd_bd, 4, bwd_bd, 4)


class SequentialTiles(NamedTuple):
    block_d: int  # channels per program of the step-by-step forward (each holding all N states)
    warps: int


#: States from which the forward walks the sequence step by step (``_scan_fwd_seq_kernel``) instead of
#: running one associative scan per state, when u is pixel-major (each step then reads one contiguous
#: vector of channels).  H200, batch 128, bf16 inference with the fused core (pixel-major): efficient_vmamba_base
#: 4180 -> 6216 img/s, vanilla_vmamba_tiny 1026 -> 2753 (N = 16); for N = 1 it is 3x slower
#: (vmamba_tiny_s1l8 7852 -> 2283 with 8 x 4-warp tiles).  Channel-first u (strided steps), 128 x 768 x 3136,
#: N = 16: 12.8 ms step by step vs 12.0 ms chunked, so the chunked kernel stays there.
SEQUENTIAL_MIN_STATES = 8


def pick_sequential_tiles(per_group: int, n_state: int, pixel_major: bool = True) -> Optional[SequentialTiles]:
    """Tiles of the step-by-step forward, or None where the chunked forward is used.

    ``VMAMBA_ZOO_SCAN_SEQ=0`` / ``=1`` turns it off / on for every N and layout (for measurements);
    ``VMAMBA_ZOO_SEQ_TILES="block_d,warps"`` overrides the tile.
    """
    mode = os.environ.get("VMAMBA_ZOO_SCAN_SEQ", "auto")
    if mode == "0" or (mode != "1" and (n_state < SEQUENTIAL_MIN_STATES or not pixel_major)):
        return None
    override = os.environ.get("VMAMBA_ZOO_SEQ_TILES")
    if override:
        bd, warps = (int(v) for v in override.split(","))
        return SequentialTiles(_largest_pow2_divisor(per_group, bd), warps)
    # H200 sweep (efficient_vmamba_base and vanilla_vmamba_tiny, bf16 inference; benchmarks/scan_sequential_h200.json):
    # 64 channels x 4 warps for N = 16 (8 (channel, state) pairs per thread) was best of 12 tiles in both
    return SequentialTiles(_largest_pow2_divisor(per_group, max(1, 1024 // _next_pow2(n_state))), 4)


def num_chunks(dim: int, per_group: int, length: int, n_state: int, pixel_major: bool = False) -> int:
    """Number of chunks the kernels split a sequence of ``length`` steps into."""
    block_l = pick_tiles(dim, per_group, length, n_state, pixel_major).block_l
    return -(-length // block_l)


def is_pixel_major(u) -> bool:
    """Whether u (batch, channels, positions) has contiguous channels (a permuted channels-last map)."""
    return u.shape[1] > 1 and u.stride(1) == 1 and u.shape[2] > 1

