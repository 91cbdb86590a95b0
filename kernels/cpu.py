"""Chunked selective scan in plain PyTorch: the fast path for CPUs (and any device without Triton).

The recurrence h_t = a_t h_{t-1} + b_t (a_t = exp(Δ_t A), b_t = Δ_t B_t u_t) is
split into chunks of T ≈ sqrt(L) steps:

1. Inside every chunk, all chunks at once, a loop of T steps runs the
   recurrence from a zero state and keeps the running decay product
   P_t = a_1 ... a_t of the chunk.
2. A loop over the L / T chunks carries the true state across chunk borders:
   carry_c = P_end(c) * carry_{c-1} + h_end(c).
3. Every step gets its chunk's incoming carry: h_t += P_t * carry_{c-1}.

So there are about 2 sqrt(L) Python iterations instead of L (112 instead of
3136 at 56×56), each over a (batch, dim, N, L / T) tensor.  The decay
products inside a chunk are exp of a cumulative sum of at most T terms of
Δ·A <= 0: bounded, and never overflowing.  Decays that would be subnormal
floats are flushed to exactly 0 (x86 computes on subnormals ~100x slower).
Autograd differentiates it (all inputs, including the final state).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .reference import softplus_delta

__all__ = ["selective_scan_chunked", "linear_recurrence_chunked", "flushed_exp", "fast_softplus"]


# Exponents below this give subnormal floats, whose arithmetic is ~100x slower on x86: such decays are
# flushed to exactly 0 (they would multiply the state by less than 2e-35 in fp32).
_FLUSH_EXPONENT = {torch.float32: -80.0, torch.float64: -700.0}


def _tracing() -> bool:
    """Whether the code is being traced (TorchScript, ONNX export): no ``out=``, no non-zero ``threshold``."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _replace_at_or_below(x: torch.Tensor, limit: float, value: float) -> torch.Tensor:
    """x with the elements <= ``limit`` replaced by ``value`` (NaN kept): one ``threshold`` pass, or a
    compare and a fill where ``threshold`` cannot be traced."""
    if _tracing():
        return x.masked_fill(x <= limit, value)
    return torch.threshold(x, limit, value)


def flushed_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x), with results that would be subnormal flushed to 0 (NaN stays NaN)."""
    return torch.exp(_replace_at_or_below(x, _FLUSH_EXPONENT.get(x.dtype, -80.0), float("-inf")))


def fast_softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus(x) (threshold 20, as mamba_ssm) from vectorised ``exp`` and ``log``: about twice as fast as
    ``F.softplus`` on x86 CPUs, to a relative error below 2e-5 (float32).

    log(1 + e^x) loses relative precision as e^x -> 0, where log1p (unvectorised, slower than softplus)
    would be needed; below x = -5 the series e - e^2 / 2 (relative error about e^2 / 3 < 1.6e-5) replaces
    it.  NaN and +-inf behave as in ``F.softplus``.  float64 input gets ``F.softplus`` (full precision).
    """
    if x.dtype == torch.float64:
        return F.softplus(x, beta=1.0, threshold=20.0)
    if (torch.is_grad_enabled() and x.requires_grad) or _tracing():
        # functional form (autograd, tracing and ONNX export; the in-place one below uses out=).  exp of x
        # clamped: an infinite e in the branch not taken would make its zero gradient NaN
        e = torch.exp(x.clamp(max=30.0))
        y = torch.where(x < -5.0, torch.addcmul(e, e, e, value=-0.5), torch.log(e + 1.0))
        return torch.where(x > 20.0, x, y)
    e = torch.exp(x)
    series = torch.addcmul(e, e, e, value=-0.5)
    y = e.add_(1.0).log_()  # e is not needed after the series
    torch.where(x < -5.0, series, y, out=y)
    return torch.where(x > 20.0, x, y, out=y)


def linear_recurrence_chunked(
    a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor] = None, chunk: Optional[int] = None,
    log_a: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """All states of h_t = a_t * h_{t-1} + b_t along the FIRST dimension (time-major).

    Args:
        a, b: (L, ...) decays and inputs (same shape), time first so that each
            step of the loops reads contiguous memory.
        h0: optional (...) initial state h_{-1}.
        chunk: steps per chunk (default ceil(sqrt(L))).
        log_a: optional log of ``a`` (<= 0).  Given, the decay products within a chunk are
            exp(cumsum(log_a)) -- a sum of at most ``chunk`` terms, so bounded, and <= 0, so the
            exponent never overflows -- with subnormal results flushed to 0.
    Returns:
        h: (L, ...).
    """
    length = a.shape[0]
    if chunk is None:
        chunk = max(1, math.ceil(math.sqrt(length)))
    n_chunks = math.ceil(length / chunk)
    pad = n_chunks * chunk - length
    if pad:  # padded steps decay by 1 and add 0: they leave the state unchanged
        a = torch.cat([a, a.new_ones((pad,) + a.shape[1:])])
        b = torch.cat([b, b.new_zeros((pad,) + b.shape[1:])])
        if log_a is not None:
            log_a = torch.cat([log_a, log_a.new_zeros((pad,) + log_a.shape[1:])])
    a = a.unflatten(0, (n_chunks, chunk))
    b = b.unflatten(0, (n_chunks, chunk))
    # 1. local scans from a zero state, all chunks in parallel, and the decay products P_t
    if log_a is not None:
        prod = flushed_exp(torch.cumsum(log_a.unflatten(0, (n_chunks, chunk)), dim=1))
    else:
        prod = torch.cumprod(a, dim=1)
    recording = torch.is_grad_enabled() and any(
        t.requires_grad for t in (a, b, log_a, h0) if t is not None)
    if recording:  # lists + stack: autograd-friendly
        local = [b[:, 0]]
        for t in range(1, chunk):
            local.append(torch.addcmul(b[:, t], a[:, t], local[-1]))
        # 2. carries across chunks: the true state entering chunk c
        carry = h0 if h0 is not None else torch.zeros_like(local[0][0])
        incoming = []
        for c in range(n_chunks):
            incoming.append(carry)
            carry = torch.addcmul(local[-1][c], prod[c, -1], carry)
        local = torch.stack(local, dim=1)
        incoming = torch.stack(incoming)
    else:  # the same steps written in place into preallocated buffers (no copies)
        local = torch.empty_like(b)
        local[:, 0] = b[:, 0]
        for t in range(1, chunk):
            torch.addcmul(b[:, t], a[:, t], local[:, t - 1], out=local[:, t])
        incoming = torch.empty_like(local[:, 0])
        incoming[0] = h0 if h0 is not None else 0.0
        for c in range(1, n_chunks):
            torch.addcmul(local[c - 1, -1], prod[c - 1, -1], incoming[c - 1], out=incoming[c])
    # 3. add the incoming state, decayed
    h_all = torch.addcmul(local, prod, incoming[:, None]).flatten(0, 1)
    return h_all[:length] if pad else h_all


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    out_dtype: Optional[torch.dtype] = None,
    initial_state: Optional[torch.Tensor] = None,
    reverse: bool = False,
    return_states: bool = False,
    max_elements: int = 1 << 24,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Selective scan with the chunked recurrence (same contract as ``selective_scan``).

    Works on any device, in float32 (float64 for float64 inputs).  The states
    (batch, dim, N, L) are formed one slice of the batch at a time, about
    ``max_elements`` per slice, which bounds the extra memory.
    """
    compute_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    out_dtype = out_dtype or u.dtype
    batch, dim, length = u.shape
    n_state = A.shape[1]
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    groups = B.shape[1]
    per_group = dim // groups
    dt = softplus_delta(delta.to(compute_dtype), None if delta_bias is None else delta_bias.to(compute_dtype),
                        delta_softplus=False)  # + delta_bias
    if delta_softplus:
        dt = fast_softplus(dt)
    # e.g. softplus of very negative values: subnormal, effectively 0 (softplus is >= 0: one pass)
    dt = _replace_at_or_below(dt, 1e-30, 0.0) if delta_softplus else dt.masked_fill(dt.abs() < 1e-30, 0.0)
    u_f = u.to(compute_dtype)
    A_f = A.to(compute_dtype)
    if reverse:
        u_f, dt = u_f.flip(-1), dt.flip(-1)
        B, C = B.flip(-1), C.flip(-1)
    # Time-major contiguous copies (L, batch, ...): every step of the recurrence
    # loops then reads contiguous rows, and the channel axis is split into
    # (G, dim // G) so that B and C broadcast over their group without copies.
    u_t = u_f.permute(2, 0, 1).contiguous().view(length, batch, groups, per_group, 1)
    dt_t = dt.permute(2, 0, 1).contiguous().view(length, batch, groups, per_group, 1)
    B_t = B.to(compute_dtype).permute(3, 0, 1, 2).contiguous().view(length, batch, groups, 1, n_state)
    C_t = C.to(compute_dtype).permute(3, 0, 1, 2).contiguous().view(length, batch, groups, 1, n_state)
    A_g = A_f.view(groups, per_group, n_state)
    h0_all = None
    if initial_state is not None:
        h0_all = initial_state.to(compute_dtype).view(batch, groups, per_group, n_state)
    # slices of the batch bound the extra memory to about max_elements states each
    step = max(1, min(batch, max_elements // max(1, dim * n_state * length)))
    # the skip term D u is added in the time-major layout, fused with the C contraction when N == 1 (not
    # while tracing: the ONNX graph then keeps the batch size dynamic only through the add at the end)
    fuse_D = D is not None and not return_states and not _tracing()
    D_g = D.to(compute_dtype).view(groups, per_group) if fuse_D else None
    outs, lasts = [], []
    for start in range(0, batch, step):
        sl = slice(start, start + step)
        log_a = dt_t[:, sl] * A_g  # (L, b, G, P, N); <= 0 when Δ >= 0 (softplus) and A <= 0
        a = flushed_exp(log_a)
        bx = (dt_t[:, sl] * u_t[:, sl]) * B_t[:, sl]
        h0 = None if h0_all is None else h0_all[sl]
        h = linear_recurrence_chunked(a, bx, h0, log_a=log_a)  # (L, b, G, P, N)
        lasts.append(h[-1].reshape(-1, dim, n_state))
        if return_states:
            outs.append(h.reshape(length, -1, dim, n_state).permute(1, 2, 3, 0))
            continue
        if n_state > 1:
            y = (h * C_t[:, sl]).sum(-1)
            if D_g is not None:
                y = torch.addcmul(y, u_t[:, sl, ..., 0], D_g)
        elif D_g is not None:  # y = h C + D u in one pass over h
            y = torch.addcmul(u_t[:, sl, ..., 0] * D_g, h[..., 0], C_t[:, sl, ..., 0])
        else:
            y = (h * C_t[:, sl]).squeeze(-1)
        outs.append(y.reshape(length, -1, dim).permute(1, 2, 0))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
    last_state = torch.cat(lasts, dim=0)  # a copy: a view would keep every state h alive
    if reverse:
        out = out.flip(-1)
    if not return_states:
        if D is not None and not fuse_D:
            out = out + D.to(compute_dtype)[:, None] * u.to(compute_dtype)
        if z is not None:
            out = out * F.silu(z.to(compute_dtype))
    out = out.to(out_dtype).contiguous()
    if return_last_state:
        return out, last_state
    return out
