"""Convolutions that keep the layout of their input without re-laying-out the weight at every call."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .param_cache import autocast_inference_params, cached_derived

__all__ = ["conv2d_keep_layout"]


def conv2d_keep_layout(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; without autograd, against cached copies of the weight where that saves work.

    * Under autocast, the weight and bias cast to autocast's dtype once
      (:func:`~vmamba_zoo.layers.param_cache.autocast_inference_params`) instead of at every call.
    * On the CPU, for a channels-last ``x``: a channels-last copy of the weight.  PyTorch's CPU
      convolution converts a contiguous weight to the input's layout at every call: for VMamba-T's
      last downsample (768x384x3x3) that copy took longer than the convolution.

    The copies are kept (:func:`~vmamba_zoo.layers.param_cache.cached_derived`) until the weight changes.

    Args:
        conv: a ``nn.Conv2d``.
        x: (B, C_in, H, W) in any memory format.
    Returns:
        (B, C_out, H', W'), in the memory format PyTorch gives for ``x``.
    """
    if torch.is_grad_enabled() or conv.padding_mode != "zeros":
        return conv(x)
    weight, bias = autocast_inference_params(conv, (conv.weight, conv.bias), x.device.type)
    if (x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            and not weight.is_contiguous(memory_format=torch.channels_last)):
        source = weight
        weight = cached_derived(conv, ("channels_last_weight", source.dtype), [source],
                                lambda: source.contiguous(memory_format=torch.channels_last))
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
