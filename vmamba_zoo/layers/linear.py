"""A linear layer that works on channels-last or channels-first maps with one weight layout, and
:func:`linear`, the zoo's linear op: on CPU in fp32 inference it runs oneDNN's linear kernel with the
bias and an optional GELU fused in.

CPU, 2 cores (AMD EPYC, AVX-512), fp32, batch 1: a VMamba-T MLP (fc1 - GELU - fc2) at its four stages'
maps takes 2.46 / 2.28 / 2.22 / 2.74 ms through oneDNN against 3.08 / 2.54 / 2.52 / 3.98 ms through
``F.linear`` (MKL's GEMM after a copy of the broadcast bias) and a separate GELU.  Whole forwards
(``benchmarks/cpu_latency.json``, 20 interleaved rounds): vmamba_tiny_s1l8 76.2 against 83.9 ms,
wave_vmamba_tiny 89.2 against 95.0 ms; outputs within 1e-6 relative of the ``F.linear`` path.
"""
from __future__ import annotations

import functools
import platform
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .param_cache import autocast_dtype, autocast_inference_params

__all__ = ["ChannelLinear", "linear", "onednn_linear_available"]

#: Set to False to run every CPU linear layer through ``F.linear`` (A/B measurements).
USE_ONEDNN_CPU_LINEAR = True

#: Smallest weight (in_features x out_features) for which the oneDNN kernel runs.  Per layer in the zoo's
#: tiny models (2 cores, each call timed both ways): oneDNN is faster from 384 x 384 up (384 x 1536 with
#: GELU at 196 rows: 1.24 vs 1.57 ms; 768 x 3072 at 49 rows: 1.37 vs 1.99 ms) and slower below 128 K
#: weights (96 x 384 with GELU at 3136 rows: 1.61 vs 1.57 ms; 96 x 96: 0.37 vs 0.32 ms; about 15 us more
#: per call, 29 vs 3 us for E-VMamba's squeeze-excite layers).
ONEDNN_MIN_WEIGHT = 1 << 17

_ACTIVATIONS = (None, "gelu")


@functools.lru_cache(maxsize=None)
def onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN's fused linear op (``torch.ops.mkldnn._linear_pointwise``, the
    kernel ``torch.compile`` uses for CPU linear layers) on an x86-64 CPU, the only one it was measured on."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._linear_pointwise.default  # noqa: B018  (resolving the op is the check)
    except (AttributeError, RuntimeError):
        return False
    return True


def _use_onednn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    """A weight of at least ``ONEDNN_MIN_WEIGHT`` elements, fp32 CPU inference (autograd off: the op has no
    backward), no CPU autocast, not traced, exported or compiled (the op is not exportable), and oneDNN
    available."""
    return (USE_ONEDNN_CPU_LINEAR and weight.numel() >= ONEDNN_MIN_WEIGHT and type(x) is torch.Tensor
            and x.device.type == "cpu"
            and x.dtype == torch.float32 and weight.dtype == torch.float32
            and (bias is None or bias.dtype == torch.float32) and not torch.is_grad_enabled()
            and autocast_dtype("cpu") is None and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and not torch.onnx.is_in_onnx_export() and not torch.compiler.is_compiling()
            and onednn_linear_available())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           activation: Optional[str] = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` over the last axis, then ``activation`` (None, or ``'gelu'``: the exact,
    erf GELU of ``nn.GELU()``).  x: (..., in_features); weight: (out_features, in_features).

    In fp32 CPU inference (see :func:`_use_onednn`) one oneDNN kernel computes the product, the bias and the
    GELU (the module docstring has the speeds); elsewhere ``F.linear`` and ``F.gelu``."""
    _check_activation(activation)
    if _use_onednn(x, weight, bias):
        if activation == "gelu":
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return _activate(F.linear(x, weight, bias), activation)


def _check_activation(activation: Optional[str]) -> None:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")


def _activate(out: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
    return F.gelu(out) if activation == "gelu" else out


class ChannelLinear(nn.Linear):
    """``nn.Linear`` over the channel axis of channels-last or channels-first tensors.

    The weight is always ``(out_features, in_features)`` as in ``nn.Linear``, so
    checkpoints load in either layout.  With ``channel_first=True`` the input
    is (B, C, H, W) and the layer runs as a 1x1 convolution on a view of the
    same weight; otherwise it is a plain linear layer over the last axis.
    Inference under autocast reuses the cast weights between calls
    (:func:`~vmamba_zoo.layers.param_cache.autocast_inference_params`); fp32 CPU inference runs oneDNN's
    fused kernel (:func:`linear`).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, channel_first: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.channel_first = channel_first

    def forward(self, x: torch.Tensor, activation: Optional[str] = None) -> torch.Tensor:
        """x: (B, H, W, C) or (..., C), or (B, C, H, W) with ``channel_first``; ``activation``: None or
        ``'gelu'`` applied to the output (fused into the linear kernel on CPU, see :func:`linear`)."""
        weight, bias = autocast_inference_params(self, (self.weight, self.bias), x.device.type)
        if self.channel_first:
            if x.dim() != 4:
                raise ValueError(f"ChannelLinear(channel_first=True) expects (B, C, H, W), got {tuple(x.shape)}")
            _check_activation(activation)
            return _activate(F.conv2d(x, weight[:, :, None, None], bias), activation)
        return linear(x, weight, bias, activation)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, channel_first={self.channel_first}"
