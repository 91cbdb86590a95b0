"""Unidirectional raster scan: one row-major route."""
from __future__ import annotations

import torch

from .base import ScanPattern, _check_map, _check_routes, register_scan_pattern

__all__ = ["UniScan"]


@register_scan_pattern("uni")
class UniScan(ScanPattern):
    """One route, row-major (pixel ``(i, j)`` at step ``i * W + j``).

    Unlike VMamba's debug ``v051d`` mode (four identical copies, K=4) this has
    K=1, i.e. one set of per-route parameters.
    """

    num_routes = 1

    def build_route_indices(self, height: int, width: int) -> torch.Tensor:
        return torch.arange(height * width).unsqueeze(0)

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, 1, D, H*W)."""
        _check_map(x, self.name)
        return x.flatten(2).unsqueeze(1)

    def merge(self, y: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, 1, D, H*W) -> (B, D, H, W)."""
        batch, _, dim, _ = _check_routes(y, self, height, width)
        return y[:, 0].reshape(batch, dim, height, width)
