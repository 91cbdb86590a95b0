"""The two pre-norm branches of a channels-last VMamba-v2 block, each run as one unit (GPU fast path).

A VSS block computes ``x + mixer(norm(x))`` then ``x + mlp(norm2(x))``.  Run
module by module, a bf16 training step of VMamba-T records some 35 autograd
nodes per block (every weight cast to bf16 is a node of its own, each with a
backward that casts its gradient back) and is host-bound on an H100: the CPU
takes longer to issue the kernels than the GPU takes to run them.  Here each
branch is one :class:`torch.autograd.Function` whose backward is written out:

* mixer branch: ``LN -> in_proj -> depth-wise conv -> SiLU -> fused SS2D core
  -> LN -> out_proj`` (see :mod:`vmamba_zoo.layers.fused_core` for the core);
* MLP branch: ``LN -> fc1 -> GELU -> fc2``.

The arithmetic is the module path's (weights cast to the autocast dtype, LayerNorm
in that dtype with fp32 statistics, the scan in fp32), so results agree to bf16
rounding.  The SiLU output, which the module path keeps, is recomputed in the
backward instead (one elementwise pass over the inner width).  Without autograd
(inference) the same forward runs with its weight casts cached across calls
(:func:`~vmamba_zoo.layers.param_cache.cached_derived`).

The path applies to blocks in the VMamba-v2 configuration on CUDA with Triton
(see :func:`fast_branches_apply`); everything else runs the modules.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vmamba_zoo_kernels.dispatch import triton_available

from .norm import LayerNorm, use_triton_layer_norm
from .fused_core import core_weights, diagonal_blocks
from .param_cache import autocast_dtype, cached_cast

__all__ = ["fast_branches_apply", "mixer_branch", "mlp_branch"]

_TensorOpt = Optional[Tensor]


# ----------------------------------------------------------------------------- applicability
def _compute_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype the branches compute in: bf16 under bf16 autocast, x's dtype without autocast, None
    (not handled: fp16 autocast keeps PyTorch's fp32 LayerNorm policy) otherwise."""
    dtype = autocast_dtype(x.device.type)
    if dtype is not None:
        return dtype if dtype == torch.bfloat16 else None
    return x.dtype if x.dtype in (torch.float32, torch.bfloat16) else None


def _mixer_supported(block: nn.Module) -> bool:
    op = block.op
    pattern = op.scan_pattern
    return (isinstance(block.norm, LayerNorm) and isinstance(op.out_norm, LayerNorm)
            and block.norm.weight is not None and block.norm.bias is not None
            and op.out_norm.weight is not None and op.out_norm.bias is not None
            and not op.channel_first and not op.gate and op.use_fused_kernel
            and op.conv2d is not None and isinstance(op.act, nn.SiLU) and isinstance(op.dropout, nn.Identity)
            and getattr(pattern, "is_gather", False) and not getattr(pattern, "fuses_states", False))


def _mlp_supported(block: nn.Module) -> bool:
    mlp = block.mlp
    return (mlp is not None and isinstance(block.norm2, LayerNorm) and block.norm2.weight is not None
            and block.norm2.bias is not None and not mlp.fc1.channel_first
            and isinstance(mlp.act, nn.GELU) and _dropout_inactive(mlp.drop, block.training))


def _dropout_inactive(drop: nn.Module, training: bool) -> bool:
    """Whether ``drop`` (``nn.Identity`` for rate 0, or ``nn.Dropout``) leaves its input as it is."""
    if isinstance(drop, nn.Identity):
        return True
    return isinstance(drop, nn.Dropout) and (drop.p == 0 or not training)


def fast_branches_apply(block: nn.Module, x: Tensor) -> bool:
    """Whether ``block`` (a channels-last VSS block) can run :func:`mixer_branch` and :func:`mlp_branch`
    on ``x`` (B, H, W, C): CUDA, Triton, a contiguous map, bf16 autocast or none, eager mode, and the
    v2 configuration (no gate, SiLU, depth-wise conv, gather scan pattern, GELU MLP, no dropout)."""
    return (x.is_cuda and x.dim() == 4 and x.is_contiguous() and not torch.compiler.is_compiling()
            and triton_available() and _compute_dtype(x) is not None and _mixer_supported(block)
            and (block.mlp is None or _mlp_supported(block)))


# ----------------------------------------------------------------------------- pieces
def _ln_forward(x: Tensor, norm: nn.LayerNorm, dtype: torch.dtype,
                cache: bool) -> Tuple[Tensor, Tuple[Tensor, ...], bool]:
    """LayerNorm of ``x`` (..., C) in ``dtype`` with fp32 statistics.

    Returns (y, saved, triton): ``saved`` = (input as normalised (``x`` in ``dtype``), mean, rstd, weight,
    bias as used) for :func:`_ln_backward`.  The Triton kernel reads the fp32 weights as they are;
    PyTorch's kernel needs them in ``dtype``."""
    from vmamba_zoo_kernels.layer_norm import _ln_fwd

    x = x.to(dtype)
    if use_triton_layer_norm(x, norm):
        y, mean, rstd = _ln_fwd(x, norm.weight, norm.bias, norm.eps, dtype)
        return y, (x, mean, rstd, norm.weight, norm.bias), True
    weight, bias = cached_cast(norm, (norm.weight, norm.bias), dtype, cache)
    y, mean, rstd = torch.native_layer_norm(x, norm.normalized_shape, weight, bias, norm.eps)
    return y, (x, mean, rstd, weight, bias), False


def _ln_backward(dy: Tensor, saved: Tuple[Tensor, ...], triton: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(dx in the normalised input's dtype, d weight, d bias) of :func:`_ln_forward`."""
    x_in, mean, rstd, weight, bias = saved
    if triton:
        from vmamba_zoo_kernels.layer_norm import _ln_bwd

        dx, dw, db = _ln_bwd(dy, x_in, weight, mean, rstd)
        return dx, dw, db
    return torch.ops.aten.native_layer_norm_backward(dy, x_in, (x_in.shape[-1],), mean, rstd, weight, bias,
                                                     [True, True, True])


def _linear_grads(dout: Tensor, inp: Tensor, weight: Tensor, has_bias: bool) -> Tuple[Tensor, Tensor, _TensorOpt]:
    """(d input, d weight, d bias) of ``F.linear(inp, weight, bias)`` over the last axis."""
    dout2 = dout.reshape(-1, dout.shape[-1])
    d_weight = dout2.t() @ inp.reshape(-1, inp.shape[-1])
    d_bias = dout2.sum(0, dtype=torch.float32) if has_bias else None
    return dout @ weight, d_weight, d_bias


def _grad_as(grad: _TensorOpt, param: _TensorOpt) -> _TensorOpt:
    if grad is None or param is None:
        return None
    if grad.dtype != param.dtype:
        grad = grad.to(param.dtype)
    return grad if grad.shape == param.shape else grad.reshape(param.shape)


# ----------------------------------------------------------------------------- mixer branch
def _mixer_forward(block: nn.Module, x: Tensor, dtype: torch.dtype, save: bool):
    """Forward of ``op(norm(x))``; returns (out, saved or None).  x: (B, H, W, C)."""
    from vmamba_zoo_kernels.triton_scan import scan_fwd

    op = block.op
    batch, height, width, _ = x.shape
    dim, n_state, rank = op.d_inner, op.d_state, op.dt_rank
    route_index = op.scan_pattern.route_indices(height, width, x.device, dtype=torch.int32)
    covers_all = op.scan_pattern.routes_cover_map(height, width, x.device)
    routes, pixels = route_index.shape[0], height * width
    width_dbl = rank + 2 * n_state
    conv = op.conv2d

    cache = not save
    h, ln1, tri1 = _ln_forward(x, block.norm, dtype, cache)
    w_in, b_in, w_conv, b_conv, w_out, b_out = cached_cast(
        op, (op.in_proj.weight, op.in_proj.bias, conv.weight, conv.bias, op.out_proj.weight, op.out_proj.bias), dtype,
        cache)
    wx, wdt, A = core_weights(op, dtype, cache)
    u = F.linear(h, w_in, b_in).permute(0, 3, 1, 2)  # (B, Di, H, W) in channels-last memory
    c = F.conv2d(u, w_conv, b_conv, conv.stride, conv.padding, conv.dilation, conv.groups)
    a = F.silu(c)
    a_pm = a.permute(0, 2, 3, 1).reshape(batch, pixels, dim)  # pixel-major; a view for channels-last maps
    x_dbl = F.linear(a_pm, wx).view(batch, pixels, routes, width_dbl)
    dt_in = x_dbl[..., :rank].reshape(batch, pixels, routes * rank)
    delta = F.linear(dt_in, wdt).transpose(1, 2)  # (B, K*Di, P), pixel-major
    bs = x_dbl[..., rank:rank + n_state].permute(0, 2, 3, 1)
    cs = x_dbl[..., rank + n_state:].permute(0, 2, 3, 1)
    ds, dt_bias = op.Ds.float(), op.dt_projs_bias.float().reshape(-1)
    y, chunk_states = scan_fwd(a_pm.transpose(1, 2), delta, A, bs, cs, ds, None, dt_bias, None, True, False, False,
                               torch.float32, route_index, covers_all)
    y = y.transpose(1, 2).view(batch, height, width, dim)  # fp32, contiguous
    yn, ln2, tri2 = _ln_forward(y, op.out_norm, dtype, cache)
    out = F.linear(yn, w_out, b_out)
    if not save:
        return out, None
    tensors = ln1 + ln2 + (h, u, c, x_dbl, dt_in, chunk_states, yn, route_index, w_in, w_conv, w_out, wx, wdt, A,
                           ds, dt_bias)
    return out, (tensors, (tri1, tri2, covers_all))


def _mixer_backward(block: nn.Module, dout: Tensor, tensors, flags, dtype: torch.dtype):
    """(d x, [gradients of :func:`_mixer_params`]) of :func:`_mixer_forward`, in the compute dtype."""
    from vmamba_zoo_kernels.triton_scan import scan_bwd

    op = block.op
    ln1, ln2 = tensors[:5], tensors[5:10]
    h, u, c, x_dbl, dt_in, chunk_states, yn, route_index, w_in, w_conv, w_out, wx, wdt, A, ds, dt_bias = tensors[10:]
    tri1, tri2, covers_all = flags
    batch, pixels, routes, width_dbl = x_dbl.shape
    dim, n_state, rank = op.d_inner, op.d_state, op.dt_rank
    conv = op.conv2d

    dout = dout.to(dtype)
    d_yn, d_w_out, d_b_out = _linear_grads(dout, yn, w_out, op.out_proj.bias is not None)
    dy, d_on_w, d_on_b = _ln_backward(d_yn, ln2, tri2)

    a = F.silu(c)  # recomputed rather than saved
    a_pm = a.permute(0, 2, 3, 1).reshape(batch, pixels, dim)
    delta = F.linear(dt_in, wdt).transpose(1, 2)
    bs = x_dbl[..., rank:rank + n_state].permute(0, 2, 3, 1)
    cs = x_dbl[..., rank + n_state:].permute(0, 2, 3, 1)
    du_scan, ddelta, dA, dB, dC, dD, _, dbias, _ = scan_bwd(
        a_pm.transpose(1, 2), delta, A, bs, cs, ds, None, dt_bias, None, chunk_states,
        dy.view(batch, pixels, dim).transpose(1, 2), None, True, False, False, False, route_index, covers_all)
    ddelta = ddelta.transpose(1, 2)  # (B, P, K*Di), contiguous
    dx_dbl = torch.empty_like(x_dbl)
    dx_dbl[..., :rank] = (ddelta @ wdt).view(batch, pixels, routes, rank)
    dx_dbl[..., rank:rank + n_state] = dB.permute(0, 3, 1, 2)
    dx_dbl[..., rank + n_state:] = dC.permute(0, 3, 1, 2)
    d_wdt = ddelta.reshape(-1, ddelta.shape[-1]).t() @ dt_in.reshape(-1, dt_in.shape[-1])
    dx_dbl2 = dx_dbl.view(-1, routes * width_dbl)
    d_wx = dx_dbl2.t() @ a_pm.reshape(-1, dim)
    d_a = (dx_dbl2 @ wx).view(batch, pixels, dim)
    d_a += du_scan.transpose(1, 2)
    d_a = d_a.view(batch, c.shape[2], c.shape[3], dim).permute(0, 3, 1, 2)  # (B, Di, H, W) like c

    dc = torch.ops.aten.silu_backward(d_a, c)
    du, d_w_conv, d_b_conv = torch.ops.aten.convolution_backward(
        dc, u, w_conv, [w_conv.shape[0]] if conv.bias is not None else None, conv.stride, conv.padding,
        conv.dilation, False, [0, 0], conv.groups, [True, True, conv.bias is not None])
    d_h, d_w_in, d_b_in = _linear_grads(du.permute(0, 2, 3, 1), h, w_in, op.in_proj.bias is not None)
    dx, d_n_w, d_n_b = _ln_backward(d_h, ln1, tri1)
    # in the order of _mixer_params; d(-exp(A_logs)) = A d(A_logs)
    return dx, [d_n_w, d_n_b, d_w_in, d_b_in, d_w_conv, d_b_conv, d_wx, diagonal_blocks(d_wdt, routes), dbias,
                dA * A, dD, d_on_w, d_on_b, d_w_out, d_b_out]


def _mixer_params(block: nn.Module) -> List[_TensorOpt]:
    op = block.op
    return [block.norm.weight, block.norm.bias, op.in_proj.weight, op.in_proj.bias, op.conv2d.weight,
            op.conv2d.bias, op.x_proj_weight, op.dt_projs_weight, op.dt_projs_bias, op.A_logs, op.Ds,
            op.out_norm.weight, op.out_norm.bias, op.out_proj.weight, op.out_proj.bias]


# ----------------------------------------------------------------------------- MLP branch
def _mlp_forward(block: nn.Module, x: Tensor, dtype: torch.dtype, save: bool):
    """Forward of ``mlp(norm2(x))``; returns (out, saved or None).  x: (B, H, W, C)."""
    mlp = block.mlp
    h, ln, tri = _ln_forward(x, block.norm2, dtype, not save)
    w1, b1, w2, b2 = cached_cast(mlp, (mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias), dtype, not save)
    g = F.linear(h, w1, b1)
    act = F.gelu(g, approximate=mlp.act.approximate)
    out = F.linear(act, w2, b2)
    if not save:
        return out, None
    return out, (ln + (h, g, act, w1, w2), tri)


def _mlp_backward(block: nn.Module, dout: Tensor, tensors, tri: bool, dtype: torch.dtype):
    """(d x, [gradients of :func:`_mlp_params`]) of :func:`_mlp_forward`, in the compute dtype."""
    mlp = block.mlp
    ln, (h, g, act, w1, w2) = tensors[:5], tensors[5:]
    approximate = mlp.act.approximate
    dout = dout.to(dtype)
    d_act, d_w2, d_b2 = _linear_grads(dout, act, w2, mlp.fc2.bias is not None)
    d_g = torch.ops.aten.gelu_backward(d_act, g, approximate=approximate)
    d_h, d_w1, d_b1 = _linear_grads(d_g, h, w1, mlp.fc1.bias is not None)
    dx, d_n_w, d_n_b = _ln_backward(d_h, ln, tri)
    return dx, [d_n_w, d_n_b, d_w1, d_b1, d_w2, d_b2]  # in the order of _mlp_params


def _mlp_params(block: nn.Module) -> List[_TensorOpt]:
    mlp = block.mlp
    return [block.norm2.weight, block.norm2.bias, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias]


# ----------------------------------------------------------------------------- the autograd nodes
class _Branch(torch.autograd.Function):
    """A branch as one autograd node: ``run(block, x, dtype, save)`` is its forward, ``grads(block, dout,
    saved tensors, flags, dtype)`` its backward, returning (d x, [gradients of ``params(block)``]), which
    are returned here in their parameters' dtypes and shapes."""

    run = grads = params = None  # set by the subclasses

    @classmethod
    def forward(cls, ctx, block, dtype, x, *params):
        out, (tensors, flags) = cls.run(block, x, dtype, save=True)
        ctx.save_for_backward(*tensors)
        ctx.block, ctx.dtype, ctx.flags, ctx.x_dtype = block, dtype, flags, x.dtype
        return out

    @classmethod
    def backward(cls, ctx, dout):
        with torch.autocast(dout.device.type, enabled=False):
            dx, grads = cls.grads(ctx.block, dout, ctx.saved_tensors, ctx.flags, ctx.dtype)
        params = cls.params(ctx.block)
        return (None, None, dx.to(ctx.x_dtype)) + tuple(_grad_as(g, p) for g, p in zip(grads, params, strict=True))

    @classmethod
    def call(cls, block: nn.Module, x: Tensor) -> Tensor:
        dtype = _compute_dtype(x)
        if dtype is None:
            raise ValueError(f"{cls.__name__}: needs bf16 autocast, no autocast, or a bf16/fp32 input, "
                             f"got {x.dtype} input")
        with torch.autocast(x.device.type, enabled=False):  # the dtypes are explicit inside
            if torch.is_grad_enabled():
                return cls.apply(block, dtype, x, *cls.params(block))
            return cls.run(block, x, dtype, save=False)[0]


class _MixerBranch(_Branch):
    """``block.op(block.norm(x))`` (see the module docstring)."""

    run, grads, params = staticmethod(_mixer_forward), staticmethod(_mixer_backward), staticmethod(_mixer_params)


class _MlpBranch(_Branch):
    """``block.mlp(block.norm2(x))`` (see the module docstring)."""

    run, grads, params = staticmethod(_mlp_forward), staticmethod(_mlp_backward), staticmethod(_mlp_params)


def mixer_branch(block: nn.Module, x: Tensor) -> Tensor:
    """``block.op(block.norm(x))`` for x (B, H, W, C): one autograd node while autograd records, the
    module path's arithmetic otherwise.  The caller checks :func:`fast_branches_apply` (or runs Triton's
    interpreter on CPU tensors, as the tests do)."""
    return _MixerBranch.call(block, x)


def mlp_branch(block: nn.Module, x: Tensor) -> Tensor:
    """``block.mlp(block.norm2(x))`` for x (B, H, W, C); see :func:`mixer_branch`."""
    return _MlpBranch.call(block, x)
