"""EfficientVMamba's atrous (skip-sampled) scan, ES2D with step 2.

Reference: "EfficientVMamba: Atrous Selective Scan for Light Weight Visual
Mamba", Xiaohuan Pei, Tao Huang, Chang Xu, AAAI 2025 (arXiv:2403.09977);
official ``EfficientScan``/``EfficientMerge`` in
https://github.com/TerryPei/EfficientVMamba (``classification/lib/models/mamba/efficient_scan.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ScanPattern, _check_map, _check_routes, register_scan_pattern

__all__ = ["AtrousScan"]


@register_scan_pattern("atrous")
class AtrousScan(ScanPattern):
    """Four stride-2 sub-grids, one route each; every pixel is read by exactly one route.

    The map is (conceptually) zero-padded at the bottom/right to even
    ``Hp x Wp`` (``Hp = 2 * ceil(H / 2)``), then split into four sub-grids of
    ``Hp/2 x Wp/2`` pixels, each scanned once:

    =====  =================  =============
    route  pixels (i, j)      order
    =====  =================  =============
    0      (2a,     2b)       row-major
    1      (2a + 1, 2b)       column-major
    2      (2a,     2b + 1)   row-major
    3      (2a + 1, 2b + 1)   column-major
    =====  =================  =============

    Each route has length ``L = Hp * Wp / 4``, so all routes together scan
    ``Hp * Wp`` steps (a quarter of VMamba's cross scan) while each still spans
    the whole image.  ``merge`` scatters every route's outputs back to its own
    pixels (no sum: ``merge(scan(x)) == x``) and crops the padding.

    As a gather pattern the route map indexes the *original* ``H x W`` grid
    and marks pixels of the padding with -1.  Such a step reads zero, exactly
    like the official pad-then-scan: it is a real (zero-input) scan step that
    still decays the state by ``exp(delta * A)`` with ``delta =
    softplus(dt_bias)``, and its output is dropped.  The route order and the
    stacked per-route parameters (``x_proj_weight[k]`` ...) match the official
    checkpoints.  Only step 2 exists (the official ``step_size`` is fixed to 2).
    """

    num_routes = 4

    def seq_len(self, height: int, width: int) -> int:
        return ((height + 1) // 2) * ((width + 1) // 2)

    def build_route_indices(self, height: int, width: int) -> torch.Tensor:
        hp, wp = 2 * ((height + 1) // 2), 2 * ((width + 1) // 2)
        rows = torch.arange(hp).view(hp, 1).expand(hp, wp)
        cols = torch.arange(wp).view(1, wp).expand(hp, wp)
        grid = torch.where((rows < height) & (cols < width), rows * width + cols, torch.full_like(rows, -1))
        return torch.stack([
            grid[0::2, 0::2].reshape(-1),
            grid[1::2, 0::2].t().reshape(-1),
            grid[0::2, 1::2].reshape(-1),
            grid[1::2, 1::2].t().reshape(-1),
        ])

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, 4, D, ceil(H/2) * ceil(W/2)) by strided slicing."""
        _check_map(x, self.name)
        batch, dim, height, width = x.shape
        x = F.pad(x, (0, width % 2, 0, height % 2))
        return torch.stack([
            x[:, :, 0::2, 0::2].flatten(2),
            x[:, :, 1::2, 0::2].transpose(2, 3).flatten(2),
            x[:, :, 0::2, 1::2].flatten(2),
            x[:, :, 1::2, 1::2].transpose(2, 3).flatten(2),
        ], dim=1)

    def merge(self, y: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, 4, D, L) -> (B, D, H, W): each route written to its own sub-grid, padding cropped."""
        batch, _, dim, _ = _check_routes(y, self, height, width)
        h2, w2 = (height + 1) // 2, (width + 1) // 2
        out = y.new_empty(batch, dim, 2 * h2, 2 * w2)
        out[:, :, 0::2, 0::2] = y[:, 0].reshape(batch, dim, h2, w2)
        out[:, :, 1::2, 0::2] = y[:, 1].reshape(batch, dim, w2, h2).transpose(2, 3)
        out[:, :, 0::2, 1::2] = y[:, 2].reshape(batch, dim, h2, w2)
        out[:, :, 1::2, 1::2] = y[:, 3].reshape(batch, dim, w2, h2).transpose(2, 3)
        return out[:, :, :height, :width]
