"""``torch.library`` registration of the Triton selective scan.

Two custom ops, ``vmamba_zoo::selective_scan_fwd`` and
``vmamba_zoo::selective_scan_bwd``, with fake (meta) implementations and an
autograd formula, so ``torch.compile(fullgraph=True)`` traces a module that
calls the scan without a graph break.  The ops run the Triton kernels: on CUDA
tensors, or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``).

Autocast: the ops are not autocast-aware on purpose; they compute in fp32
from whatever dtypes they get (fp32/fp16/bf16) and return ``out_dtype``.  The
caller (the 2D mixer) decides the I/O precision, e.g. bf16 in, fp32 out.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .tiling import is_pixel_major, num_chunks

__all__ = ["selective_scan_triton", "selective_scan_routes_triton", "selective_scan_routes_projected_triton"]

def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


@torch.library.custom_op("vmamba_zoo::selective_scan_fwd", mutates_args=())
def _fwd_op(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
    D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor], initial_state: Optional[Tensor],
    delta_softplus: bool, reverse: bool, return_states: bool, out_dtype: torch.dtype, deterministic: bool,
    route_index: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    from .triton_scan import scan_fwd

    return scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse,
                    return_states, out_dtype, route_index)


@_fwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse, return_states, out_dtype,
      deterministic, route_index=None):
    batch, dim, length = delta.shape
    if route_index is not None:
        length = route_index.shape[1]
    n_state = A.shape[1]
    chunks = num_chunks(dim, dim // B.shape[1], length, n_state, is_pixel_major(u))
    states = u.new_empty((batch, dim, chunks, n_state), dtype=torch.float32)
    if route_index is not None:
        return torch.empty_like(u, dtype=torch.float32), states
    if return_states:
        return u.new_empty((batch, dim, n_state, length), dtype=out_dtype), states
    return u.new_empty((batch, dim, length), dtype=out_dtype), states


@torch.library.custom_op("vmamba_zoo::selective_scan_bwd", mutates_args=())
def _bwd_op(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
    D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor], initial_state: Optional[Tensor],
    chunk_states: Tensor, dout: Tensor, dlast: Optional[Tensor],
    delta_softplus: bool, reverse: bool, return_states: bool, deterministic: bool,
    route_index: Optional[Tensor] = None,
) -> List[Tensor]:
    from .triton_scan import scan_bwd

    grads = scan_bwd(u, delta, A, B, C, D, z, delta_bias, initial_state, chunk_states, dout, dlast,
                     delta_softplus, reverse, return_states, deterministic, route_index)
    # a custom op's outputs may not alias each other: dB / dC and dA / dD / d(delta_bias) are views of one
    # buffer each in the direct call
    return [_empty(u) if g is None else g.clone() if g._base is not None else g for g in grads]


@_bwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, chunk_states, dout, dlast, delta_softplus, reverse,
      return_states, deterministic, route_index=None):
    f32 = dict(dtype=torch.float32)
    batch, dim, _ = delta.shape
    return [
        torch.empty_like(u, dtype=torch.float32) if route_index is not None else torch.empty_like(u),
        torch.empty_like(delta),
        A.new_empty(A.shape, **f32),
        B.new_empty(B.shape, **f32),
        C.new_empty(C.shape, **f32),
        u.new_empty((dim,), **f32) if D is not None else _empty(u),
        torch.empty_like(z) if z is not None else _empty(u),
        u.new_empty((dim,), **f32) if delta_bias is not None else _empty(u),
        u.new_empty((batch, dim, A.shape[1]), **f32),
    ]


def _setup_context(ctx, inputs, output):
    (u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse, return_states, out_dtype,
     deterministic, route_index) = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, output[1], route_index)
    ctx.flags = (delta_softplus, reverse, return_states, deterministic)


def _input_grads(ctx, dout, dstates, bwd):
    """Gradients of the forward's inputs from its saved tensors; ``bwd`` runs the backward kernel."""
    u, delta, A, B, C, D, z, delta_bias, initial_state, chunk_states, route_index = ctx.saved_tensors
    delta_softplus, reverse, return_states, deterministic = ctx.flags
    dlast = dstates[:, :, -1] if dstates is not None else None
    if dout is None:  # only the final state was used
        shape = (u.shape[0], u.shape[1], A.shape[1], u.shape[2]) if return_states else u.shape
        dout = u.new_zeros(shape, dtype=torch.float32)
    grads = bwd(u, delta, A, B, C, D, z, delta_bias, initial_state, chunk_states, dout, dlast,
                delta_softplus, reverse, return_states, deterministic, route_index)
    du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = grads
    return (
        du.to(u.dtype), ddelta, dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
        dD.to(D.dtype) if D is not None else None,
        dz if z is not None else None,
        dbias.to(delta_bias.dtype) if delta_bias is not None else None,
        dh0.to(initial_state.dtype) if initial_state is not None else None,
        None, None, None, None, None, None,
    )


def _backward(ctx, dout, dstates):
    return _input_grads(ctx, dout, dstates, _bwd_op)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerScan(torch.autograd.Function):
    """The same forward and backward as the custom ops, called directly in eager mode.

    A ``torch.library`` op costs tens of microseconds of dispatch per call, which a
    model with dozens of scans per step pays on the host; eager code therefore calls
    the kernels through this Function and only ``torch.compile`` tracing goes through
    the registered ops (see :func:`_scan`).
    """

    @staticmethod
    def forward(ctx, *inputs):
        output = _run_fwd(inputs)
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, dout, dstates):
        from .triton_scan import scan_bwd

        return _input_grads(ctx, dout, dstates, scan_bwd)


def _run_fwd(inputs) -> Tuple[Tensor, Tensor]:
    """The forward kernel on the forward op's inputs: (out, chunk_states)."""
    from .triton_scan import scan_fwd

    (u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse, return_states, out_dtype,
     deterministic, route_index) = inputs
    return scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse, return_states,
                    out_dtype, route_index)


def _needs_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


def _scan(*inputs):
    """(out, chunk_states) of the forward op: the registered op under ``torch.compile``, else the direct call
    (without an autograd node where no gradient is needed: inference pays no Function overhead)."""
    if torch.compiler.is_compiling():
        return _fwd_op(*inputs)
    if not _needs_grad(inputs):
        return _run_fwd(inputs)
    return _EagerScan.apply(*inputs)


def selective_scan_triton(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
    delta_bias: Optional[Tensor], initial_state: Optional[Tensor], delta_softplus: bool, reverse: bool,
    return_states: bool, out_dtype: torch.dtype, deterministic: bool,
) -> Tuple[Tensor, Tensor]:
    """Triton selective scan through the registered op.  B, C: (batch, G, N, L).

    Returns (out, last_state (batch, dim, N) fp32, differentiable)."""
    out, chunk_states = _scan(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse,
                              return_states, out_dtype, deterministic, None)
    return out, chunk_states[:, :, -1]


def selective_scan_routes_triton(
    x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor], delta_bias: Optional[Tensor],
    route_index: Tensor, delta_softplus: bool, deterministic: bool,
) -> Tensor:
    """Fused gather + scan + merge (see :func:`vmamba_zoo_kernels.selective_scan_routes`)."""
    out, _ = _scan(x, delta, A, B, C, D, None, delta_bias, None, delta_softplus, False, False,
                   torch.float32, deterministic, route_index)
    return out


class _EagerScanProjectedDelta(torch.autograd.Function):
    """Fused route scan whose Δ is a linear projection, ``delta = dt_in @ dt_weight.T``, recomputed in the
    backward instead of saved.

    Δ has K*D channels per pixel (K times the map's width), the largest tensor a scan keeps for its
    backward; saving the K*R-wide ``dt_in`` instead and recomputing one GEMM cuts a VMamba training
    step's peak memory by about 1.6 GiB (tiny, batch 128).
    """

    @staticmethod
    def forward(ctx, x, dt_in, dt_weight, A, B, C, D, delta_bias, route_index, delta_softplus, deterministic):
        from .triton_scan import scan_fwd

        delta = F.linear(dt_in, dt_weight.to(dt_in.dtype)).transpose(1, 2)  # (batch, K*D, P), pixel-major
        out, chunk_states = scan_fwd(x, delta, A, B, C, D, None, delta_bias, None, delta_softplus, False, False,
                                     torch.float32, route_index)
        ctx.save_for_backward(x, dt_in, dt_weight, A, B, C, D, delta_bias, chunk_states, route_index)
        ctx.flags = (delta_softplus, deterministic)
        return out

    @staticmethod
    def backward(ctx, dout):
        from .triton_scan import scan_bwd

        x, dt_in, dt_weight, A, B, C, D, delta_bias, chunk_states, route_index = ctx.saved_tensors
        delta_softplus, deterministic = ctx.flags
        weight = dt_weight.to(dt_in.dtype)
        delta = F.linear(dt_in, weight).transpose(1, 2)
        du, ddelta, dA, dB, dC, dD, _, dbias, _ = scan_bwd(
            x, delta, A, B, C, D, None, delta_bias, None, chunk_states, dout, None, delta_softplus, False, False,
            deterministic, route_index)
        ddelta = ddelta.transpose(1, 2)  # (batch, P, K*D), contiguous like the recomputed delta
        d_dt_in = ddelta @ weight
        d_weight = ddelta.reshape(-1, ddelta.shape[-1]).t() @ dt_in.reshape(-1, dt_in.shape[-1])
        return (
            du.to(x.dtype), d_dt_in, d_weight.to(dt_weight.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            dD.to(D.dtype) if D is not None else None,
            dbias.to(delta_bias.dtype) if delta_bias is not None else None,
            None, None, None,
        )


def selective_scan_routes_projected_triton(
    x: Tensor, dt_in: Tensor, dt_weight: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
    delta_bias: Optional[Tensor], route_index: Tensor, delta_softplus: bool, deterministic: bool,
) -> Tensor:
    """:func:`selective_scan_routes_triton` with ``delta = (dt_in @ dt_weight.T).transpose(1, 2)``.

    Args:
        x: (batch, D, P) pixel-major map; dt_in: (batch, P, K*R); dt_weight: (K*D, K*R) (block-diagonal
            for per-route projections; any matrix works).  Other arguments as the unprojected call.
    Returns:
        (batch, D, P) float32, the merged routes' output.
    """
    if torch.compiler.is_compiling() or not _needs_grad((x, dt_in, dt_weight, A, B, C, D, delta_bias)):
        # traced through the registered ops (Δ saved, not recomputed), or inference (nothing saved)
        delta = F.linear(dt_in, dt_weight.to(dt_in.dtype)).transpose(1, 2)
        return selective_scan_routes_triton(x, delta, A, B, C, D, delta_bias, route_index, delta_softplus,
                                            deterministic)
    return _EagerScanProjectedDelta.apply(x, dt_in, dt_weight, A, B, C, D, delta_bias, route_index,
                                          delta_softplus, deterministic)
