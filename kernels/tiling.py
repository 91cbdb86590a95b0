"""Tile sizes of the Triton kernels (pure Python, so fake/meta implementations need no Triton)."""
from __future__ import annotations

from typing import Tuple

__all__ = ["pick_blocks", "num_chunks"]


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def pick_blocks(dim: int, per_group: int, length: int) -> Tuple[int, int, int]:
    """(BLOCK_D, BLOCK_L, num_warps) for a (dim, group size, L) problem.

    BLOCK_D is a power of two dividing the group size, so a tile never spans
    two groups of B / C.  Fixed choices (no autotuning) keep the chunking, and
    therefore the rounding, identical between runs and between forward and
    backward, which shares the forward's chunk-boundary states.
    """
    block_l = min(256, max(16, _next_pow2(length)))
    block_d = 1
    while block_d < 64 and per_group % (block_d * 2) == 0 and block_d * 2 * block_l <= 4096:
        block_d *= 2
    num_warps = 4 if block_d * block_l >= 1024 else 2
    return block_d, block_l, num_warps


def num_chunks(dim: int, per_group: int, length: int) -> int:
    """Number of BLOCK_L chunks the kernels split a sequence of ``length`` into."""
    block_l = pick_blocks(dim, per_group, length)[1]
    return -(-length // block_l)
