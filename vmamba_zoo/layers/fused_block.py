"""A channels-last VMamba-v2 block run as one unit (GPU fast path).

A VSS block computes ``x + DropPath(mixer(norm(x)))`` then ``+ DropPath(mlp(norm2(.)))``.
Run module by module, a bf16 training step of VMamba-T records some 35 autograd
nodes per block (every weight cast to bf16 is a node of its own, each with a
backward that casts its gradient back) and is host-bound on an H100: the CPU
takes longer to issue the kernels than the GPU takes to run them.  Here the
block is one :class:`torch.autograd.Function` whose backward is written out:

* mixer branch: ``LN -> in_proj -> depth-wise conv -> SiLU -> fused SS2D core
  -> LN -> out_proj`` (see :mod:`vmamba_zoo.layers.fused_core` for the core);
* MLP branch: ``LN -> fc1 -> GELU -> fc2``;
* the residual adds, with timm's per-sample drop-path factors when training.

Launches are what the host pays for, so the block's weights are cast to the
compute dtype by one flat cast, the dt projections read whole x_proj rows (no
copy of the dt features), the scan kernels take A_logs (no -exp pass, no dA*A),
the weight gradients of the GEMMs come out of the GEMM in fp32 (CUDA), and the
remaining gradient casts run together.  The arithmetic is the module path's
(weights cast to the autocast dtype, LayerNorm in that dtype with fp32
statistics, the scan in fp32), so results agree to bf16 rounding.  Without autograd
(inference) the same forward runs with its weight casts cached across calls
(:func:`~vmamba_zoo.layers.param_cache.cached_derived`).  :func:`mixer_branch` and
:func:`mlp_branch` run one branch alone (without its residual).

The path applies to blocks in the VMamba-v2 configuration on CUDA with Triton
(see :func:`fast_branches_apply`); everything else runs the modules.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from vmamba_zoo_kernels.dispatch import triton_available

from .norm import LayerNorm, use_triton_layer_norm
from .fused_core import block_diagonal, diagonal_blocks
from .param_cache import autocast_dtype, cached_derived

__all__ = ["fast_branches_apply", "vss_block", "mixer_branch", "mlp_branch"]

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


def _drop_path_supported(drop_path: nn.Module) -> bool:
    """An identity or timm's ``DropPath`` (whose per-sample factors :func:`_drop_path_scale` draws)."""
    return isinstance(drop_path, (nn.Identity, DropPath))


def fast_branches_apply(block: nn.Module, x: Tensor) -> bool:
    """Whether ``block`` (a channels-last VSS block) can run :func:`vss_block` (and :func:`mixer_branch`,
    :func:`mlp_branch`) on ``x`` (B, H, W, C): CUDA, Triton, a contiguous map, bf16 autocast or none, eager
    mode, and the v2 configuration (no gate, SiLU, depth-wise conv, gather scan pattern, GELU MLP, no
    dropout; drop path an identity or timm's ``DropPath``)."""
    return (x.is_cuda and x.dim() == 4 and x.is_contiguous() and not torch.compiler.is_compiling()
            and triton_available() and _compute_dtype(x) is not None and _mixer_supported(block)
            and (block.mlp is None or _mlp_supported(block)) and _drop_path_supported(block.drop_path))


# ----------------------------------------------------------------------------- weights in the compute dtype
def _cast_group(tensors: Sequence[Tensor], dtype: torch.dtype) -> List[Tensor]:
    """``tensors`` cast to ``dtype`` together: concatenated into one new flat buffer, cast, and returned as
    contiguous views of it shaped as ``tensors`` (two launches and three calls into C++, where one ``.to``
    per tensor costs a launch and some 10-30 us of host time each).  A new buffer every call, so tensors
    saved for a backward are never overwritten by a later forward."""
    flat = torch._utils._flatten_dense_tensors(tensors).to(dtype)
    return list(torch._utils._unflatten_dense_tensors(flat, tensors))


#: positions in :func:`_mixer_params` / :func:`_mlp_params` of the parameters the branches use in the compute
#: dtype (the GEMM and conv weights and biases); the norms' parameters go to the Triton LayerNorm as they are
#: (the PyTorch fallback casts them itself), and the mixer's dt bias, A_logs and D are used in fp32
_MIXER_CAST = (2, 3, 4, 5, 6, 7, 13, 14)  # in_proj w, b, conv w, b, x_proj, dt_projs, out_proj w, b
_MLP_CAST = (2, 3, 4, 5)  # fc1 w, b, fc2 w, b


def _branch_weights(block: nn.Module, params: Tuple[List[_TensorOpt], List[_TensorOpt]], dtype: torch.dtype,
                    cache: bool):
    """(mixer weights, MLP weights) in ``dtype`` from ``params`` = (mixer parameters, MLP parameters) of
    :func:`_branch_params` (an empty list for a branch that does not run; None for it here), all cast by one
    :func:`_cast_group` (``None`` kept for absent biases).

    Mixer weights: (in_proj w, b, conv w, b, out_proj w, b, x_proj as a (K*(R+2N), D) matrix, the dt weights
    as one block-diagonal (K*D, K*(R+2N)) matrix that multiplies whole x_proj rows (each route's (D, R)
    weight, zeros against its B and C columns: no copy of the dt features), A_logs in fp32 (the scan kernels
    take A = -exp(A_logs) themselves)).  MLP weights: (fc1 w, b, fc2 w, b).  With ``cache`` (inference) they
    are reused across calls while the parameters are unchanged
    (:func:`~vmamba_zoo.layers.param_cache.cached_derived`); training passes ``cache=False``: autograd is off
    inside the autograd Function, so a cache would otherwise hold across training steps, and a benchmark
    without optimizer steps would skip work real training does."""
    mixer_params, mlp_params = params
    listed = ([mixer_params[i] for i in _MIXER_CAST] if mixer_params else []) + (
        [mlp_params[i] for i in _MLP_CAST] if mlp_params else [])

    def make():
        cast = iter(_cast_group([t for t in listed if t is not None], dtype))
        flat = [next(cast) if t is not None else None for t in listed]
        mixer, mlp = None, None
        if mixer_params:
            op = block.op
            routes, width_dbl, dim = op.x_proj_weight.shape
            w_in, b_in, w_conv, b_conv, x_proj, dt_weights, w_out, b_out = flat[:len(_MIXER_CAST)]
            # the dt weights as one (K*Di, K*(R+2N)) matrix that reads whole x_proj rows (zeros at B, C)
            mixer = (w_in, b_in, w_conv, b_conv, w_out, b_out, x_proj.reshape(routes * width_dbl, dim),
                     block_diagonal(dt_weights, block_cols=width_dbl), op.A_logs.float())
        if mlp_params:
            mlp = tuple(flat[-len(_MLP_CAST):])
        return mixer, mlp

    if not cache:
        return make()
    kinds = (bool(mixer_params), bool(mlp_params))
    sources = [t for t in listed if t is not None] + ([block.op.A_logs] if mixer_params else [])
    return cached_derived(block, ("branch_weights", kinds, dtype), sources, make)


# ----------------------------------------------------------------------------- pieces
#: Widest rows for which a training step's LayerNorms run the Triton kernels.  H100, bf16, forward / backward
#: GPU ms, PyTorch vs Triton, at VMamba-T's maps (batch 128): C 96: 0.45 / 0.41 vs 0.06 / 0.15; C 192: 0.13 /
#: 0.16 vs 0.05 / 0.11; C 384: 0.04 / 0.14 vs 0.04 / 0.07; C 768: 0.02 / 0.04 vs 0.04 / 0.10.
_TRAIN_TRITON_MAX_CHANNELS = 512


def _ln_forward(x: Tensor, norm: nn.LayerNorm, dtype: torch.dtype, weight: Tensor, bias: Tensor,
                training: bool) -> Tuple[Tensor, Tuple[Tensor, ...], bool]:
    """LayerNorm of ``x`` (..., C) in ``dtype`` with fp32 statistics; ``weight``, ``bias``: the norm's parameters
    (the Triton kernel reads them as they are; PyTorch's kernel gets them cast to ``dtype``).  ``training``
    (a backward follows): the Triton kernels up to 512 channels, where PyTorch's LayerNorm backward is the
    slower (its weight/bias-gradient kernel; see ``_TRAIN_TRITON_MAX_CHANNELS``); inference follows the
    modules' choice (:func:`~vmamba_zoo.layers.norm.use_triton_layer_norm`).

    Returns (y, saved, triton): ``saved`` = (input as normalised (``x`` in ``dtype``), mean, rstd, weight,
    bias as used) for :func:`_ln_backward`."""
    from vmamba_zoo_kernels.layer_norm import _ln_fwd, supports_triton_layer_norm

    x = x.to(dtype)
    if training:
        triton = (x.is_cuda and x.shape[-1] <= _TRAIN_TRITON_MAX_CHANNELS
                  and supports_triton_layer_norm(x, norm.normalized_shape))
    else:
        triton = use_triton_layer_norm(x, norm)
    if triton:
        y, mean, rstd = _ln_fwd(x, weight, bias, norm.eps, dtype)
        return y, (x, mean, rstd, weight, bias), True
    weight, bias = weight.to(dtype), bias.to(dtype)
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


#: ``torch.mm(..., out_dtype=...)`` (a GEMM writing fp32 from bf16/fp16 inputs, CUDA only) exists since torch 2.8
_MM_OUT_DTYPE = "dtype" in torch.ops.aten.mm.overloads()


def _weight_grad(dout2: Tensor, inp2: Tensor) -> Tensor:
    """``dout2ᵀ @ inp2``, the weight gradient of a linear layer (dout2 (M, O), inp2 (M, I)): written in fp32
    by the GEMM itself on CUDA where torch can (no separate cast to the fp32 parameter's dtype), else in the
    inputs' dtype (cast afterwards with the other gradients)."""
    if _MM_OUT_DTYPE and dout2.is_cuda and dout2.dtype in (torch.bfloat16, torch.float16):
        return torch.mm(dout2.t(), inp2, out_dtype=torch.float32)
    return dout2.t() @ inp2


def _linear_grads(dout: Tensor, inp: Tensor, weight: Tensor, has_bias: bool) -> Tuple[Tensor, Tensor, _TensorOpt]:
    """(d input, d weight, d bias) of ``F.linear(inp, weight, bias)`` over the last axis."""
    dout2 = dout.reshape(-1, dout.shape[-1])
    d_weight = _weight_grad(dout2, inp.reshape(-1, inp.shape[-1]))
    d_bias = dout2.sum(0, dtype=torch.float32) if has_bias else None
    return dout @ weight, d_weight, d_bias


def _grads_as_params(grads: Sequence[_TensorOpt], params: Sequence[_TensorOpt]) -> List[_TensorOpt]:
    """``grads`` reshaped to their parameters' shapes (and strides) and cast to their dtypes; the casts (gradients a kernel
    wrote in the compute dtype) are done together by one :func:`_cast_group` per parameter dtype where there
    are more than two."""
    out: List[_TensorOpt] = []
    to_cast: Dict[torch.dtype, List[int]] = {}
    for grad, param in zip(grads, params, strict=True):
        if grad is None or param is None:
            out.append(None)
            continue
        if grad.shape != param.shape or grad.stride() != param.stride():
            # the parameter's shape and strides, as AccumulateGrad gives and DDP's gradient buckets expect: a
            # conv weight's gradient in channels-last memory (C, 1, k, k) differs only in its size-1 dimension's
            # stride, and reshape gives the canonical strides without a copy
            grad = grad.reshape(param.shape)
            if param.is_contiguous() and grad.stride() != param.stride():
                grad = grad.contiguous()
        if grad.dtype != param.dtype:
            to_cast.setdefault(param.dtype, []).append(len(out))
        out.append(grad)
    for dtype, positions in to_cast.items():
        if len(positions) <= 2:  # one .to each: fewer calls than a flat cast of so few
            for i in positions:
                out[i] = out[i].to(dtype)
            continue
        for position, cast in zip(positions, _cast_group([out[i].contiguous() for i in positions], dtype)):
            out[position] = cast
    return out


# ----------------------------------------------------------------------------- mixer branch
def _mixer_forward(block: nn.Module, x: Tensor, dtype: torch.dtype, params: List[_TensorOpt], weights, save: bool):
    """Forward of ``op(norm(x))`` with ``params`` (:func:`_mixer_params`) and ``weights`` (their compute-dtype
    forms, :func:`_branch_weights`); returns (out, saved or None).  x: (B, H, W, C)."""
    from vmamba_zoo_kernels.triton_scan import scan_fwd

    op = block.op
    batch, height, width, _ = x.shape
    dim, n_state, rank = op.d_inner, op.d_state, op.dt_rank
    route_index = op.scan_pattern.route_indices(height, width, x.device, dtype=torch.int32)
    covers_all = op.scan_pattern.routes_cover_map(height, width, x.device)
    routes, pixels = route_index.shape[0], height * width
    width_dbl = rank + 2 * n_state
    conv = op.conv2d
    w_in, b_in, w_conv, b_conv, w_out, b_out, wx, wdt, a_logs = weights
    n_w, n_b, _, _, _, _, _, _, dt_bias, _, ds, on_w, on_b, _, _ = params  # those used as they are (fp32)

    h, ln1, tri1 = _ln_forward(x, block.norm, dtype, n_w, n_b, save)
    u = F.linear(h, w_in, b_in).permute(0, 3, 1, 2)  # (B, Di, H, W) in channels-last memory
    c = F.conv2d(u, w_conv, b_conv, conv.stride, conv.padding, conv.dilation, conv.groups)
    a = F.silu(c)
    a_pm = a.permute(0, 2, 3, 1).reshape(batch, pixels, dim)  # pixel-major; a view for channels-last maps
    x_rows = F.linear(a_pm, wx)  # (B, P, K*(R+2N))
    x_dbl = x_rows.view(batch, pixels, routes, width_dbl)
    delta = F.linear(x_rows, wdt).transpose(1, 2)  # (B, K*Di, P), pixel-major
    bs = x_dbl[..., rank:rank + n_state].permute(0, 2, 3, 1)
    cs = x_dbl[..., rank + n_state:].permute(0, 2, 3, 1)
    ds, dt_bias = ds.float(), dt_bias.float().view(-1)
    y, chunk_states = scan_fwd(a_pm.transpose(1, 2), delta, a_logs, bs, cs, ds, None, dt_bias, None, True, False,
                               False, torch.float32, route_index, covers_all, a_is_log=True)
    y = y.transpose(1, 2).view(batch, height, width, dim)  # fp32, contiguous
    yn, ln2, tri2 = _ln_forward(y, op.out_norm, dtype, on_w, on_b, save)
    out = F.linear(yn, w_out, b_out)
    if not save:
        return out, None
    tensors = ln1 + ln2 + (h, u, c, a, x_dbl, chunk_states, yn, route_index, w_in, w_conv, w_out, wx, wdt, a_logs,
                           ds, dt_bias)
    return out, (tensors, (tri1, tri2, covers_all))


def _mixer_backward(block: nn.Module, dout: Tensor, tensors, flags, dtype: torch.dtype):
    """(d x, [gradients of :func:`_mixer_params`]) of :func:`_mixer_forward`, in the compute dtype (weight
    gradients of the GEMMs in fp32 on CUDA)."""
    from vmamba_zoo_kernels.triton_scan import scan_bwd

    op = block.op
    ln1, ln2 = tensors[:5], tensors[5:10]
    h, u, c, a, x_dbl, chunk_states, yn, route_index, w_in, w_conv, w_out, wx, wdt, a_logs, ds, dt_bias = tensors[10:]
    tri1, tri2, covers_all = flags
    batch, pixels, routes, width_dbl = x_dbl.shape
    dim, n_state, rank = op.d_inner, op.d_state, op.dt_rank
    conv = op.conv2d

    dout = dout.to(dtype)
    d_yn, d_w_out, d_b_out = _linear_grads(dout, yn, w_out, op.out_proj.bias is not None)
    dy, d_on_w, d_on_b = _ln_backward(d_yn, ln2, tri2)

    a_pm = a.permute(0, 2, 3, 1).reshape(batch, pixels, dim)
    x_rows = x_dbl.view(batch, pixels, routes * width_dbl)
    delta = F.linear(x_rows, wdt).transpose(1, 2)
    bs = x_dbl[..., rank:rank + n_state].permute(0, 2, 3, 1)
    cs = x_dbl[..., rank + n_state:].permute(0, 2, 3, 1)
    du_scan, ddelta, d_a_logs, d_bc_rows, _, dD, _, dbias, _ = scan_bwd(
        a_pm.transpose(1, 2), delta, a_logs, bs, cs, ds, None, dt_bias, None, chunk_states,
        dy.view(batch, pixels, dim).transpose(1, 2), None, True, False, False, False, route_index, covers_all,
        a_is_log=True, reduce_bc=False)
    ddelta = ddelta.transpose(1, 2).reshape(-1, ddelta.shape[1])  # (B*P, K*Di), a view (pixel-major)
    dx_dbl2 = ddelta @ wdt  # (B*P, K*(R+2N)): the dt features' gradient, zeros at B and C, ...
    # ... where dB and dC go, summed over the scan's channel tiles: (2, B, K, N, P) view of the B, C columns
    d_bc = dx_dbl2.view(batch, pixels, routes, width_dbl)[..., rank:].unflatten(3, (2, n_state)).permute(3, 0, 2, 4, 1)
    torch.sum(d_bc_rows, 3, out=d_bc)
    d_wdt = _weight_grad(ddelta, x_rows.view(-1, routes * width_dbl))
    d_wx = _weight_grad(dx_dbl2, a_pm.reshape(-1, dim))
    d_a = (dx_dbl2 @ wx).view(batch, pixels, dim)
    d_a += du_scan.transpose(1, 2)
    d_a = d_a.view(batch, c.shape[2], c.shape[3], dim).permute(0, 3, 1, 2)  # (B, Di, H, W) like c

    dc = torch.ops.aten.silu_backward(d_a, c)
    du, d_w_conv, d_b_conv = torch.ops.aten.convolution_backward(
        dc, u, w_conv, [w_conv.shape[0]] if conv.bias is not None else None, conv.stride, conv.padding,
        conv.dilation, False, [0, 0], conv.groups, [True, True, conv.bias is not None])
    d_h, d_w_in, d_b_in = _linear_grads(du.permute(0, 2, 3, 1), h, w_in, op.in_proj.bias is not None)
    dx, d_n_w, d_n_b = _ln_backward(d_h, ln1, tri1)
    d_dt_weights = diagonal_blocks(d_wdt, routes)[..., :rank]  # (K, Di, R) of the padded block-diagonal grad
    # in the order of _mixer_params
    return dx, [d_n_w, d_n_b, d_w_in, d_b_in, d_w_conv, d_b_conv, d_wx, d_dt_weights, dbias, d_a_logs, dD, d_on_w,
                d_on_b, d_w_out, d_b_out]


def _mixer_params(block: nn.Module) -> List[_TensorOpt]:
    op = block.op
    return [block.norm.weight, block.norm.bias, op.in_proj.weight, op.in_proj.bias, op.conv2d.weight,
            op.conv2d.bias, op.x_proj_weight, op.dt_projs_weight, op.dt_projs_bias, op.A_logs, op.Ds,
            op.out_norm.weight, op.out_norm.bias, op.out_proj.weight, op.out_proj.bias]


# ----------------------------------------------------------------------------- MLP branch
def _mlp_forward(block: nn.Module, x: Tensor, dtype: torch.dtype, params: List[_TensorOpt], weights, save: bool):
    """Forward of ``mlp(norm2(x))`` with ``params`` (:func:`_mlp_params`) and ``weights`` (the GEMMs' in the compute
    dtype, :func:`_branch_weights`); returns (out, saved or None).  x: (B, H, W, C)."""
    mlp = block.mlp
    w1, b1, w2, b2 = weights
    n_w, n_b = params[:2]  # the norm's (the GEMM weights come cast in ``weights``)
    h, ln, tri = _ln_forward(x, block.norm2, dtype, n_w, n_b, save)
    g = F.linear(h, w1, b1)
    act = F.gelu(g, approximate=mlp.act.approximate)
    out = F.linear(act, w2, b2)
    if not save:
        return out, None
    return out, (ln + (h, g, act, w1, w2), tri)


def _mlp_backward(block: nn.Module, dout: Tensor, tensors, tri: bool, dtype: torch.dtype):
    """(d x, [gradients of :func:`_mlp_params`]) of :func:`_mlp_forward`, in the compute dtype (weight
    gradients of the GEMMs in fp32 on CUDA)."""
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


# ----------------------------------------------------------------------------- the autograd node
# What one node computes: which branches, and whether each adds onto its input (the block's residuals)
# or returns the branch output alone.
_Plan = Tuple[bool, bool, bool]  # (mixer, mlp, residual)
_BLOCK: _Plan = (True, True, True)
_MIXER_ONLY: _Plan = (True, False, False)
_MLP_ONLY: _Plan = (False, True, False)


def _branch_params(block: nn.Module, plan: _Plan) -> Tuple[List[_TensorOpt], List[_TensorOpt]]:
    """(mixer parameters, MLP parameters) of the branches ``plan`` runs (an empty list for one it does not)."""
    return (_mixer_params(block) if plan[0] else []), (_mlp_params(block) if plan[1] else [])


def _residual(x: Tensor, branch_out: Tensor, scale: _TensorOpt) -> Tensor:
    """``x + branch_out * scale`` (``scale``: the per-sample drop-path factors (B, 1, 1, 1), or None)."""
    return x + (branch_out * scale if scale is not None else branch_out)


def _run(block: nn.Module, plan: _Plan, x: Tensor, dtype: torch.dtype, scales: Tuple[_TensorOpt, _TensorOpt],
         params: Tuple[List[_TensorOpt], List[_TensorOpt]], save: bool):
    """The forward of ``plan`` on ``x`` (``params``: :func:`_branch_params`): returns (out, saved tensors,
    per-branch flags), the last two None without ``save``."""
    with_mixer, with_mlp, residual = plan
    mixer_w, mlp_w = _branch_weights(block, params, dtype, cache=not save)
    tensors: Tuple[Tensor, ...] = ()
    flags = []
    h = x
    for runs, forward, branch_params, weights, scale in ((with_mixer, _mixer_forward, params[0], mixer_w, scales[0]),
                                                         (with_mlp, _mlp_forward, params[1], mlp_w, scales[1])):
        if not runs:
            continue
        out, saved = forward(block, h, dtype, branch_params, weights, save)
        h = _residual(h, out, scale) if residual else out
        if save:
            tensors += saved[0]
            flags.append((len(saved[0]), saved[1]))
    return h, (tensors if save else None), (flags if save else None)


class _FusedBlock(torch.autograd.Function):
    """A VSS block (or one of its branches, see ``_Plan``) as one autograd node, its backward written out.

    One node instead of ~35 per block, and fewer launches inside it (see the module docstring): what
    bounded a bf16 training step of VMamba-T on an H100 was the host issuing launches, not GPU time."""

    @staticmethod
    def forward(ctx, block, plan, dtype, n_mixer, scale_mixer, scale_mlp, x, *params):
        # params: the mixer's n_mixer parameters, then the MLP's (_branch_params, flat so autograd sees them)
        split = (list(params[:n_mixer]), list(params[n_mixer:]))
        out, tensors, flags = _run(block, plan, x, dtype, (scale_mixer, scale_mlp), split, save=True)
        ctx.save_for_backward(*tensors, scale_mixer, scale_mlp)
        ctx.block, ctx.plan, ctx.dtype, ctx.flags, ctx.x_dtype = block, plan, dtype, flags, x.dtype
        ctx.params = params  # the gradients' dtypes and shapes (not their values: nothing to version-check)
        return out

    @staticmethod
    def backward(ctx, dout):
        block, (with_mixer, with_mlp, residual), dtype = ctx.block, ctx.plan, ctx.dtype
        *tensors, scale_mixer, scale_mlp = ctx.saved_tensors
        branches = [(backward, scale) for runs, backward, scale in (
            (with_mixer, _mixer_backward, scale_mixer), (with_mlp, _mlp_backward, scale_mlp)) if runs]
        steps = []  # (backward, its saved tensors, its flags, its drop-path factors), in forward order
        start = 0
        for (backward, scale), (count, flag) in zip(branches, ctx.flags, strict=True):
            steps.append((backward, tensors[start:start + count], flag, scale))
            start += count
        grads: List[_TensorOpt] = []
        with torch.autocast(dout.device.type, enabled=False):
            for backward, saved, flag, scale in reversed(steps):
                d_branch = dout * scale if scale is not None else dout
                d_in, branch_grads = backward(block, d_branch, saved, flag, dtype)
                dout = dout + d_in if residual else d_in
                grads = branch_grads + grads
        return (None,) * 6 + (dout.to(ctx.x_dtype),) + tuple(_grads_as_params(grads, ctx.params))


def _drop_path_scale(drop_path: nn.Module, like: Tensor) -> _TensorOpt:
    """Per-sample factors of an active timm ``DropPath`` (training, rate > 0), drawn as ``timm.layers.drop_path``
    draws them for a branch output like ``like`` (B, H, W, C); None for an identity."""
    if isinstance(drop_path, nn.Identity) or not drop_path.training or drop_path.drop_prob == 0:
        return None
    keep = 1 - drop_path.drop_prob
    scale = like.new_empty((like.shape[0],) + (1,) * (like.dim() - 1)).bernoulli_(keep)
    if keep > 0 and drop_path.scale_by_keep:
        scale.div_(keep)
    return scale


def _apply(block: nn.Module, plan: _Plan, x: Tensor) -> Tensor:
    dtype = _compute_dtype(x)
    if dtype is None:
        raise ValueError(f"fused VSS block: needs bf16 autocast, no autocast, or a bf16/fp32 input, "
                         f"got {x.dtype} input")
    scales: Tuple[_TensorOpt, _TensorOpt] = (None, None)
    if plan[2] and isinstance(block.drop_path, DropPath) and block.drop_path.training:
        like = x.new_empty((x.shape[0], 1, 1, 1), dtype=dtype)
        scales = (_drop_path_scale(block.drop_path, like) if plan[0] else None,
                  _drop_path_scale(block.drop_path, like) if plan[1] else None)
    mixer_params, mlp_params = _branch_params(block, plan)
    with torch.autocast(x.device.type, enabled=False):  # the dtypes are explicit inside
        if torch.is_grad_enabled():
            return _FusedBlock.apply(block, plan, dtype, len(mixer_params), *scales, x, *mixer_params, *mlp_params)
        return _run(block, plan, x, dtype, scales, (mixer_params, mlp_params), save=False)[0]


def vss_block(block: nn.Module, x: Tensor) -> Tensor:
    """The whole VSS block on x (B, H, W, C): ``x + DropPath(op(norm(x)))`` then ``+ DropPath(mlp(norm2(.)))``,
    one autograd node while autograd records, the module path's arithmetic otherwise.  The caller checks
    :func:`fast_branches_apply` (or runs Triton's interpreter on CPU tensors, as the tests do)."""
    return _apply(block, _BLOCK if block.mlp is not None else (True, False, True), x)


def mixer_branch(block: nn.Module, x: Tensor) -> Tensor:
    """``block.op(block.norm(x))`` alone for x (B, H, W, C); see :func:`vss_block`."""
    return _apply(block, _MIXER_ONLY, x)


def mlp_branch(block: nn.Module, x: Tensor) -> Tensor:
    """``block.mlp(block.norm2(x))`` alone for x (B, H, W, C); see :func:`vss_block`."""
    return _apply(block, _MLP_ONLY, x)
