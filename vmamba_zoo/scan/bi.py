"""Bidirectional raster scan: row-major forward and reversed."""
from __future__ import annotations

import torch

from .base import ScanPattern, _check_map, _check_routes, register_scan_pattern

__all__ = ["BiScan"]


@register_scan_pattern("bi")
class BiScan(ScanPattern):
    """Two routes: row-major raster, then the same raster reversed; outputs summed.

    ``merge(scan(x)) == 2 * x``.  Unlike VMamba's debug ``v052d`` mode
    (forward, forward, reversed, reversed; K=4) this has K=2.
    """

    num_routes = 2

    def build_route_indices(self, height: int, width: int) -> torch.Tensor:
        row = torch.arange(height * width)
        return torch.stack([row, row.flip(0)])

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, 2, D, H*W)."""
        _check_map(x, self.name)
        row = x.flatten(2)
        return torch.stack([row, row.flip(-1)], dim=1)

    def merge(self, y: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, 2, D, H*W) -> (B, D, H, W)."""
        batch, _, dim, _ = _check_routes(y, self, height, width)
        return (y[:, 0] + y[:, 1].flip(-1)).reshape(batch, dim, height, width)
