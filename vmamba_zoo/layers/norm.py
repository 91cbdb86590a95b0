"""Channels-first LayerNorm with ``nn.LayerNorm``'s parameters and default epsilon."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerNorm2d"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map.

    Same parameters (``weight``, ``bias`` of shape (C,)) and default ``eps=1e-5``
    as ``nn.LayerNorm(C)``, so checkpoints load in either layout.  (timm's
    ``LayerNorm2d`` defaults to ``eps=1e-6``, which VMamba does not use.)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"LayerNorm2d expects (B, C, H, W), got shape {tuple(x.shape)}")
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
