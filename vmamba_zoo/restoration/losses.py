"""Pixel losses of the restoration literature (BasicSR conventions)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["CharbonnierLoss", "L1Loss", "build_pixel_loss"]


class CharbonnierLoss(nn.Module):
    """``mean(sqrt((pred - target)^2 + eps))``, BasicSR's ``CharbonnierLoss``.

    Note that ``eps`` is added to the *squared* difference (BasicSR's definition, used by
    MambaIR's denoising configs with ``eps=1e-3``), not squared first.

    Args:
        eps: added under the square root.
        loss_weight: multiplier of the loss.
    """

    def __init__(self, eps: float = 1e-12, loss_weight: float = 1.0) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.eps, self.loss_weight = float(eps), float(loss_weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target: (B, C, H, W).  Returns a scalar."""
        return self.loss_weight * torch.sqrt((pred - target) ** 2 + self.eps).mean()


class L1Loss(nn.Module):
    """Mean absolute error times ``loss_weight``."""

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target: (B, C, H, W).  Returns a scalar."""
        return self.loss_weight * (pred - target).abs().mean()


def build_pixel_loss(name: str, loss_weight: float = 1.0, eps: float = 1e-3) -> nn.Module:
    """``'l1'`` -> :class:`L1Loss`; ``'charbonnier'`` -> :class:`CharbonnierLoss` (``eps``)."""
    if name == "l1":
        return L1Loss(loss_weight)
    if name == "charbonnier":
        return CharbonnierLoss(eps, loss_weight)
    raise ValueError(f"unknown pixel loss {name!r}; use 'l1' or 'charbonnier'")
