"""A linear layer that works on channels-last or channels-first maps with one weight layout."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .param_cache import autocast_inference_params

__all__ = ["ChannelLinear"]


class ChannelLinear(nn.Linear):
    """``nn.Linear`` over the channel axis of channels-last or channels-first tensors.

    The weight is always ``(out_features, in_features)`` as in ``nn.Linear``, so
    checkpoints load in either layout.  With ``channel_first=True`` the input
    is (B, C, H, W) and the layer runs as a 1x1 convolution on a view of the
    same weight; otherwise it is a plain linear layer over the last axis.
    Inference under autocast reuses the cast weights between calls
    (:func:`~vmamba_zoo.layers.param_cache.autocast_inference_params`).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, channel_first: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.channel_first = channel_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = autocast_inference_params(self, (self.weight, self.bias), x.device.type)
        if self.channel_first:
            if x.dim() != 4:
                raise ValueError(f"ChannelLinear(channel_first=True) expects (B, C, H, W), got {tuple(x.shape)}")
            return F.conv2d(x, weight[:, :, None, None], bias)
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, channel_first={self.channel_first}"
