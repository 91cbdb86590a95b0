"""Triton LayerNorm over the last dimension, for the narrow rows of channels-last vision trunks.

PyTorch's CUDA LayerNorm gives each row (one pixel's C channels, C = 96 ... 768
in VMamba) to a warp or block of its own, so at small C it runs far below
memory speed.  Here a program normalises a [BLOCK_M x BLOCK_C] tile of rows at
once, reads its input in whatever float dtype it comes (an fp32 scan output
needs no separate cast pass) and writes ``out_dtype``.

Contract, as ``torch.nn.functional.layer_norm(x, (C,), weight, bias, eps)``:

    y = (x - mean) / sqrt(var + eps) * weight + bias     (biased variance)

Statistics and gradients accumulate in fp32.  The backward returns dx in x's
dtype and d(weight), d(bias) in fp32, reduced per program and then summed
(deterministic, no atomics).

Registered as ``torch.library`` custom ops (``vmamba_zoo::layer_norm_fwd`` /
``_bwd``) with fake implementations, so ``torch.compile`` traces through.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .launch import CachedLauncher

__all__ = ["layer_norm_triton", "layer_norm_silu_gate_triton", "supports_triton_layer_norm"]

_MAX_CHANNELS = 4096


def supports_triton_layer_norm(x: Tensor, normalized_shape) -> bool:
    """Whether :func:`layer_norm_triton` handles ``x`` (a float tensor normalised over its last dim)."""
    return (len(normalized_shape) == 1 and x.dim() >= 1 and x.shape[-1] == normalized_shape[0]
            and 0 < x.shape[-1] <= _MAX_CHANNELS and x.dtype in (torch.float32, torch.float16, torch.bfloat16))


def _tiles(channels: int) -> Tuple[int, int, int]:
    """(BLOCK_M, BLOCK_C, num_warps): about 4096 elements per program."""
    block_c = 1 << max(0, (channels - 1).bit_length())
    block_m = max(1, min(64, 4096 // block_c))
    num_warps = 4 if block_c * block_m <= 4096 else 8
    return block_m, block_c, num_warps


def _kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def ln_fwd(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, z_ptr, M, C, eps, z_row_stride,
               BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
               SILU_GATE: tl.constexpr):
        # SILU_GATE: y * silu(z) is written and no statistics are kept (inference); else y, mean and rstd
        rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_C)
        mask_c = cols < C
        mask = (rows < M)[:, None] & mask_c[None, :]
        offs = rows[:, None] * C + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=1) / C
        xc = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / C + eps)
        y = xc * rstd[:, None]
        if HAS_W:
            y = y * tl.load(w_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        if HAS_B:
            y = y + tl.load(b_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        if SILU_GATE:
            z = tl.load(z_ptr + rows[:, None] * z_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            y = y * z / (1.0 + tl.exp(-z))
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
        if not SILU_GATE:
            tl.store(mean_ptr + rows, mean, mask=rows < M)
            tl.store(rstd_ptr + rows, rstd, mask=rows < M)

    @triton.jit
    def ln_bwd(dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr, db_ptr, M, C, blocks_per_program,
               BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, HAS_W: tl.constexpr):
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_C)
        mask_c = cols < C
        if HAS_W:
            w = tl.load(w_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)
        dw_acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
        db_acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
        for i in range(blocks_per_program):
            rows = (pid.to(tl.int64) * blocks_per_program + i) * BLOCK_M + tl.arange(0, BLOCK_M)
            mask_m = rows < M
            mask = mask_m[:, None] & mask_c[None, :]
            offs = rows[:, None] * C + cols[None, :]
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            mean = tl.load(mean_ptr + rows, mask=mask_m, other=0.0)
            rstd = tl.load(rstd_ptr + rows, mask=mask_m, other=0.0)
            xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
            if HAS_W:
                wdy = dy * w[None, :]
            else:
                wdy = dy
            c1 = tl.sum(xhat * wdy, axis=1) / C
            c2 = tl.sum(wdy, axis=1) / C
            dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
            dw_acc += dy * xhat
            db_acc += dy
        tl.store(dw_ptr + pid * C + cols, tl.sum(dw_acc, axis=0), mask=mask_c)
        tl.store(db_ptr + pid * C + cols, tl.sum(db_acc, axis=0), mask=mask_c)

    return CachedLauncher(ln_fwd), CachedLauncher(ln_bwd)


_KERNELS = None


def _get_kernels():
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _kernels()
    return _KERNELS


def _ln_fwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
            out_dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    """Launch the forward kernel: (y, mean, rstd)."""
    ln_fwd, _ = _get_kernels()
    channels = x.shape[-1]
    x2 = x.contiguous().view(-1, channels)
    rows = x2.shape[0]
    y = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    mean = torch.empty(rows, device=x.device, dtype=torch.float32)
    rstd = torch.empty(rows, device=x.device, dtype=torch.float32)
    if rows:
        block_m, block_c, num_warps = _tiles(channels)
        ln_fwd[(-(-rows // block_m),)](
            x2, weight if weight is not None else mean, bias if bias is not None else mean, y, mean, rstd, x2,
            rows, channels, eps, 0, BLOCK_M=block_m, BLOCK_C=block_c, HAS_W=weight is not None,
            HAS_B=bias is not None, SILU_GATE=False, num_warps=num_warps)
    return y, mean, rstd


@torch.library.custom_op("vmamba_zoo::layer_norm_fwd", mutates_args=())
def _ln_fwd_op(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
               out_dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    return _ln_fwd(x, weight, bias, eps, out_dtype)


@_ln_fwd_op.register_fake
def _(x, weight, bias, eps, out_dtype):
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    f32 = dict(device=x.device, dtype=torch.float32)
    return x.new_empty(x.shape, dtype=out_dtype), torch.empty(rows, **f32), torch.empty(rows, **f32)


def _ln_bwd(dy: Tensor, x: Tensor, weight: Optional[Tensor], mean: Tensor, rstd: Tensor) -> List[Tensor]:
    """Launch the backward kernel: [dx, dweight, dbias] (fp32 parameter gradients)."""
    _, ln_bwd = _get_kernels()
    channels = x.shape[-1]
    x2 = x.contiguous().view(-1, channels)
    dy2 = dy.contiguous().view(-1, channels)
    rows = x2.shape[0]
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    block_m, block_c, num_warps = _tiles(channels)
    blocks = -(-rows // block_m)
    per_program = max(1, -(-blocks // 1024))  # about a thousand programs, each reducing its own dw/db rows
    programs = max(1, -(-blocks // per_program))
    parts = torch.empty(2, programs, channels, device=x.device, dtype=torch.float32)  # d weight, d bias rows
    if rows:
        ln_bwd[(programs,)](
            dy2, x2, weight if weight is not None else mean, mean, rstd, dx, parts[0], parts[1],
            rows, channels, per_program, BLOCK_M=block_m, BLOCK_C=block_c, HAS_W=weight is not None,
            num_warps=num_warps)
    else:
        parts.zero_()
    sums = parts.sum(1)
    return [dx, sums[0], sums[1]]


@torch.library.custom_op("vmamba_zoo::layer_norm_bwd", mutates_args=())
def _ln_bwd_op(dy: Tensor, x: Tensor, weight: Optional[Tensor], mean: Tensor, rstd: Tensor) -> List[Tensor]:
    dx, dw, db = _ln_bwd(dy, x, weight, mean, rstd)
    return [dx, dw.clone(), db]  # a custom op's outputs may not alias: dw and db are rows of one buffer


@_ln_bwd_op.register_fake
def _(dy, x, weight, mean, rstd):
    channels = x.shape[-1]
    f32 = dict(device=x.device, dtype=torch.float32)
    return [torch.empty_like(x), torch.empty(channels, **f32), torch.empty(channels, **f32)]


def _setup_context(ctx, inputs, output):
    x, weight, bias, eps, out_dtype = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, mean, rstd)
    ctx.has_bias = bias is not None
    ctx.param_dtypes = (weight.dtype if weight is not None else None, bias.dtype if bias is not None else None)


def _input_grads(ctx, dy, bwd):
    x, weight, mean, rstd = ctx.saved_tensors
    dx, dw, db = bwd(dy, x, weight, mean, rstd)
    w_dtype, b_dtype = ctx.param_dtypes
    return (dx, dw.to(w_dtype) if weight is not None else None, db.to(b_dtype) if ctx.has_bias else None,
            None, None)


def _backward(ctx, dy, dmean, drstd):
    return _input_grads(ctx, dy, _ln_bwd_op)


_ln_fwd_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerLayerNorm(torch.autograd.Function):
    """The custom ops' forward and backward called directly (no dispatcher round trip) in eager mode."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        output = _ln_fwd(x, weight, bias, eps, out_dtype)
        _setup_context(ctx, (x, weight, bias, eps, out_dtype), output)
        ctx.mark_non_differentiable(output[1], output[2])
        return output

    @staticmethod
    def backward(ctx, dy, dmean, drstd):
        return _input_grads(ctx, dy, _ln_bwd)


def layer_norm_triton(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                      out_dtype: Optional[torch.dtype] = None) -> Tensor:
    """LayerNorm of ``x`` (..., C) over C, in Triton; output in ``out_dtype`` (default: x's dtype).

    ``weight`` and ``bias`` are (C,) in any float dtype (fp32 master weights under autocast are read
    as they are).  Differentiable in x, weight and bias.  Needs CUDA tensors (or Triton's interpreter).
    """
    if not supports_triton_layer_norm(x, (x.shape[-1],)):
        raise ValueError(f"layer_norm_triton: expected a float16/bfloat16/float32 tensor with 1..{_MAX_CHANNELS} "
                         f"channels in its last dim, got {x.dtype} {tuple(x.shape)}")
    op = _ln_fwd_op if torch.compiler.is_compiling() else _EagerLayerNorm.apply
    y, _, _ = op(x, weight, bias, float(eps), out_dtype or x.dtype)
    return y


def _row_stride(t: Tensor) -> Optional[int]:
    """The stride between consecutive rows of ``t`` (..., C) seen as (rows, C) with contiguous channels, or
    None when its rows are not evenly spaced (e.g. a transposed map)."""
    if t.dim() < 2 or t.stride(-1) != 1:
        return None
    for i in range(t.dim() - 2):
        if t.shape[i] > 1 and t.stride(i) != t.stride(i + 1) * t.shape[i + 1]:
            return None
    return t.stride(-2)


def layer_norm_silu_gate_triton(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                                z: Tensor, out_dtype: Optional[torch.dtype] = None) -> Tensor:
    """``layer_norm(x) * silu(z)`` over the last dim in one pass, for inference (no autograd).

    The gated output of a mixer (SS2D with a gate: ``out_norm(y) * act(z)``): the LayerNorm reads ``x``
    in any float dtype (an fp32 scan output needs no cast pass), SiLU and the product are applied on the
    way out, in fp32, and the result is written once in ``out_dtype`` (default: x's dtype).

    Args:
        x: (..., C) contiguous.
        weight, bias: (C,) or None.
        eps: the LayerNorm's epsilon.
        z: x's shape with contiguous channels and evenly spaced rows (e.g. one half of a projection's
            output split along channels).
    Returns:
        (..., C) in ``out_dtype``.
    """
    z_stride = _row_stride(z)
    if (not supports_triton_layer_norm(x, (x.shape[-1],)) or z.shape != x.shape or z_stride is None
            or not x.is_contiguous()):
        raise ValueError(f"layer_norm_silu_gate_triton: expected a contiguous float x (..., C <= {_MAX_CHANNELS}) "
                         f"and a z of its shape with contiguous channels and evenly spaced rows; got x "
                         f"{x.dtype} {tuple(x.shape)}, z {tuple(z.shape)} with strides {z.stride()}")
    ln_fwd, _ = _get_kernels()
    channels = x.shape[-1]
    rows = x.numel() // channels if channels else 0
    y = torch.empty(x.shape, device=x.device, dtype=out_dtype or x.dtype)
    if rows:
        block_m, block_c, num_warps = _tiles(channels)
        ln_fwd[(-(-rows // block_m),)](
            x, weight if weight is not None else x, bias if bias is not None else x, y, x, x, z, rows, channels,
            float(eps), z_stride, BLOCK_M=block_m, BLOCK_C=block_c, HAS_W=weight is not None,
            HAS_B=bias is not None, SILU_GATE=True, num_warps=num_warps)
    return y
