"""Convolutions that keep the layout of their input without re-laying-out the weight at every call."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vmamba_zoo_kernels.dispatch import triton_available

from .param_cache import autocast_dtype, autocast_inference_params, cached_derived

__all__ = ["conv2d_keep_layout", "is_depthwise3x3", "depthwise3x3_fused_applies", "depthwise3x3_fused"]


def is_depthwise3x3(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is a depth-wise 3x3 convolution with zero padding 1, stride 1, no dilation."""
    return (conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
            and conv.groups == conv.in_channels == conv.out_channels)


def depthwise3x3_fused_applies(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether :func:`depthwise3x3_fused` runs ``conv`` on ``x`` as one Triton kernel: CUDA, no autograd,
    not compiling, a depth-wise 3x3 ``conv`` and a channels-last ``x`` (contiguous channels)."""
    return (x.is_cuda and not torch.is_grad_enabled() and x.dim() == 4 and x.stride(1) == 1
            and x.dtype in (torch.float32, torch.bfloat16, torch.float16) and is_depthwise3x3(conv)
            and not torch.compiler.is_compiling() and triton_available())


def depthwise3x3_fused(conv: nn.Conv2d, x: torch.Tensor, silu: bool = False, residual: bool = False) -> torch.Tensor:
    """``act(conv(x)) (+ x)`` as one kernel (caller checks :func:`depthwise3x3_fused_applies`).

    The result has the dtype the unfused ops give: autocast's for the convolution (and SiLU) under
    autocast, promoted with x's when the residual is added.

    Args:
        conv: depth-wise 3x3 convolution.
        x: (B, C, H, W) with contiguous channels.
        silu: SiLU after the convolution.
        residual: add ``x`` last (Spatial-Mamba's ``x + cpe(x)``).
    Returns:
        (B, C, H, W) in channels-last memory.
    """
    from vmamba_zoo_kernels.dwconv import dwconv3x3_channels_last_triton

    conv_dtype = autocast_dtype(x.device.type) or x.dtype
    out_dtype = torch.promote_types(conv_dtype, x.dtype) if residual else conv_dtype
    return dwconv3x3_channels_last_triton(x, conv.weight, conv.bias, silu=silu, residual=residual,
                                          out_dtype=out_dtype)


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
        source = weight  # conv.weight or its autocast copy, both unchanged while conv.weight is
        weight = cached_derived(conv, ("channels_last_weight", source.dtype), [conv.weight],
                                lambda: source.contiguous(memory_format=torch.channels_last))
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
