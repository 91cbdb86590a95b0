"""Convolutions that keep the layout of their input without re-laying-out the weight at every call."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .param_cache import cached_derived

__all__ = ["conv2d_keep_layout"]


def conv2d_keep_layout(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; on the CPU, for a channels-last ``x`` and no autograd, against a cached channels-last
    copy of the weight.

    PyTorch's CPU convolution converts a contiguous weight to the input's channels-last layout at every
    call: for VMamba-T's last downsample (768x384x3x3) that copy took longer than the convolution.
    The copy is kept (:func:`~vmamba_zoo.layers.param_cache.cached_derived`) until the weight changes.

    Args:
        conv: a ``nn.Conv2d`` with zero padding mode.
        x: (B, C_in, H, W) in any memory format.
    Returns:
        (B, C_out, H', W'), in the memory format PyTorch gives for ``x``.
    """
    weight = conv.weight
    if (x.device.type == "cpu" and conv.padding_mode == "zeros" and not torch.is_grad_enabled()
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            and not weight.is_contiguous(memory_format=torch.channels_last)):
        weight = cached_derived(conv, "channels_last_weight", [conv.weight],
                                lambda: conv.weight.contiguous(memory_format=torch.channels_last))
        return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return conv(x)
