"""VMamba's cross scan (SS2D, ``scans=0``): four full-grid routes, outputs summed."""
from __future__ import annotations

import torch

from .base import ScanPattern, _check_map, _check_routes, register_scan_pattern

__all__ = ["CrossScan"]


@register_scan_pattern("cross")
class CrossScan(ScanPattern):
    """Four routes over the whole H x W grid (VMamba SS2D).

    Route 0 is row-major (pixel ``(i, j)`` at step ``i * W + j``), route 1 is
    column-major (step ``j * H + i``), routes 2 and 3 are routes 0 and 1
    reversed.  ``merge`` undoes each permutation and sums the four outputs, so
    ``merge(scan(x)) == 4 * x``.  The route order matches the official
    checkpoints' stacked per-route parameters (``x_proj_weight[k]`` etc.).
    """

    num_routes = 4

    def build_route_indices(self, height: int, width: int) -> torch.Tensor:
        row = torch.arange(height * width)
        col = row.view(height, width).t().reshape(-1)
        return torch.stack([row, col, row.flip(0), col.flip(0)])

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, 4, D, H*W) with flips/transposes instead of a gather."""
        _check_map(x, self.name)
        batch, dim, height, width = x.shape
        row = x.reshape(batch, dim, height * width)
        col = x.transpose(2, 3).reshape(batch, dim, height * width)
        xs = torch.stack([row, col], dim=1)
        return torch.cat([xs, xs.flip(-1)], dim=1)

    def merge(self, y: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, 4, D, H*W) -> (B, D, H, W): inverse permutations, summed."""
        batch, _, dim, length = _check_routes(y, self, height, width)
        y = y[:, :2] + y[:, 2:].flip(-1)
        col = y[:, 1].reshape(batch, dim, width, height).transpose(2, 3)
        return y[:, 0].reshape(batch, dim, height, width) + col
