"""LayerNorms of the zoo: channels-last and channels-first, with ``nn.LayerNorm``'s parameters and epsilon.

Under bf16 autocast both normalise in bf16 I/O (PyTorch's kernels accumulate in
fp32) instead of autocast's default of casting the input up to fp32 and
returning fp32, which costs two extra passes over every activation (the same
idea as timm's ``fast_norm``).  fp16 autocast keeps the fp32 path: fp16's range
is too small for unnormalised activations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vmamba_zoo_kernels.dispatch import triton_available
from vmamba_zoo_kernels.layer_norm import layer_norm_triton, supports_triton_layer_norm

from .param_cache import autocast_dtype, cached_cast

__all__ = ["LayerNorm", "LayerNorm2d", "make_norm", "use_triton_layer_norm"]


# Where the Triton LayerNorm wins (H100, VMamba-T at batch 128): many rows of few channels.  PyTorch's kernel
# took 7.1 ms of a 26 ms bf16 forward, mostly at C = 96 (0.45 ms per call against 0.17 ms); at C >= 384 it is
# already fast and costs less host time per call (12 us against 43 us), which matters in the late stages.
_TRITON_MAX_CHANNELS = 256
_TRITON_MIN_ELEMENTS = 1 << 23


def use_triton_layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> bool:
    """Whether ``norm`` over ``x`` runs the Triton kernel: CUDA, Triton, many rows of few channels."""
    if not x.is_cuda or x.shape[-1] > _TRITON_MAX_CHANNELS or x.numel() < _TRITON_MIN_ELEMENTS:
        return False
    return triton_available() and supports_triton_layer_norm(x, norm.normalized_shape)


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``norm`` over the last dimension; in bf16 (fp32 accumulation) under bf16 autocast.

    On CUDA with Triton, runs :func:`vmamba_zoo_kernels.layer_norm.layer_norm_triton` (many narrow rows per
    program; PyTorch's kernel is several times slower at VMamba's 96-768 channels), except under fp16
    autocast, which keeps PyTorch's fp32 policy.
    """
    device_type = x.device.type
    cast_to = autocast_dtype(device_type)
    autocast_on = cast_to is not None
    bf16_autocast = cast_to == torch.bfloat16
    if bf16_autocast:
        x = x.to(torch.bfloat16)
    if (bf16_autocast or not autocast_on) and use_triton_layer_norm(x, norm):
        return layer_norm_triton(x, norm.weight, norm.bias, norm.eps)
    if bf16_autocast:
        weight, bias = cached_cast(norm, (norm.weight, norm.bias), torch.bfloat16)
        with torch.autocast(device_type, enabled=False):
            return F.layer_norm(x, norm.normalized_shape, weight, bias, norm.eps)
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension that stays in bf16 under bf16 autocast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _layer_norm(x, self)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map.

    Same parameters (``weight``, ``bias`` of shape (C,)) and default ``eps=1e-5``
    as ``nn.LayerNorm(C)``, so checkpoints load in either layout.  (timm's
    ``LayerNorm2d`` defaults to ``eps=1e-6``, which VMamba does not use.)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"LayerNorm2d expects (B, C, H, W), got shape {tuple(x.shape)}")
        return _layer_norm(x.permute(0, 2, 3, 1), self).permute(0, 3, 1, 2)


def make_norm(dim: int, channel_first: bool) -> nn.Module:
    """LayerNorm over ``dim`` channels of a (B, C, H, W) map if ``channel_first``, else of (..., C)."""
    return LayerNorm2d(dim) if channel_first else LayerNorm(dim)
