"""Triton forward and backward selective-scan kernels.

Layout: u, delta, z, out are (batch, dim, L) and B, C (batch, G, N, L), each
read and written through its own strides (channel-first, or pixel-major as
handed over by a channels-last mixer).  One program owns a tile of
``BLOCK_D`` channels of one group of one batch row and walks the sequence in
chunks of ``BLOCK_L`` steps.

With a route index (``GATHER``) step s of group (route) g reads position
``idx[g, s]`` of pixel-ordered tensors, and the outputs of all routes are
added onto one merged map (the fused 2-D scan).  Then one program owns a tile
of channels of the *shared* map and runs every route over it in turn, adding
each route's output (forward) and du (backward) onto the merged map with a
plain read-modify-write: no other program touches those channels and a route
visits a pixel at most once, so no atomics are needed (a barrier separates
the routes).

forward, per chunk and per state n (a runtime loop, so N costs no registers):
    a = exp2(Δ · A_n · log2 e), b = Δ · u · B_n        tiles (BLOCK_D, BLOCK_L)
    (P, h) = associative scan of (a, b) along L       h from a zero state
    h += P · h_in                                       state entering the chunk
    y += h · C_n
The state leaving every chunk is written to ``chunk_states`` (batch, dim,
n_chunks, N) fp32: the checkpoints of the backward.  Nothing of size
(batch, dim, L, N) is ever written (except in ``return_states`` mode, whose
output it is).

backward, chunks in reverse order, per state n:
    recompute a, b and h from the chunk's incoming checkpoint;
    G_t = dL/dh_t solves G_t = e_t + a_{t+1} G_{t+1} with e_t = dy_t C_t; it is
    a reverse associative scan of (W, a, e) triples (see ``_combine_rev``)
    whose first element receives the carry a_{t+1} G_{t+1} of the next chunk.
    Then dΔ, du, dA, dB, dC, dD, dz and d(delta_bias) follow pointwise with
    a_t h_{t-1} = h_t - b_t.
With small tiles and few states the next chunk's inputs are loaded while the current one computes
(``BWD_PREFETCH_MAX_PER_THREAD``).  dB and dC are reduced over the channel tile before they leave the program.
In the fused (GATHER) backward, and always with ``deterministic``, each tile
writes its own partial row, summed in PyTorch afterwards (no atomics); else
(and when tiles x states > 32, e.g. N = 16) the reduced rows are atomically
added into one buffer.  dA, dD and d(delta_bias) are always per-(batch, channel)
partials summed in PyTorch.

Accumulation is fp32 throughout; inputs may be fp32, fp16 or bf16.
Works with Triton 3.x (GPU) and Triton's interpreter (``TRITON_INTERPRET=1``,
CPU tensors), which the CPU test-suite uses.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .launch import CachedLauncher
from .tiling import is_pixel_major, pick_sequential_tiles, pick_tiles

__all__ = ["scan_fwd", "scan_bwd"]

LOG2E = 1.4426950408889634

#: The backward loads the next chunk's inputs during the current chunk (and the merged du before the scans) when
#: every thread holds at most ``BWD_PREFETCH_MAX_PER_THREAD`` elements of a tile and there are at most
#: ``BWD_PREFETCH_MAX_STATES`` states (the held tiles then fit in registers; with many states a chunk's work is
#: long anyway).  H100, fused routes, batch 128, N = 1, ms at D96 56x56 (8 x 64 tiles, 2 warps): 3.56-3.74
#: without, 3.19-3.33 with; with 16 x 64 tiles (2 warps) its registers spill and it is slower (D192 28x28:
#: 1.9 -> 2.3); with N = 16 a training step of vanilla_vmamba_tiny was slower with it (212 -> 190 img/s).
BWD_PREFETCH_MAX_PER_THREAD = 8
BWD_PREFETCH_MAX_STATES = 4


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _combine_rev(w1, l1, g1, w2, l2, g2):
    # Reverse-time recurrence G_t = e_t + a_{t+1} G_{t+1}, processed from late to
    # early times.  A segment summary is (W, L, G): W = product of the a's of the
    # segment except its earliest element, L = a of its earliest element, G = the
    # G of its earliest element from a zero carry.  "1" is the later segment.
    return w1 * l1 * w2, l2, g2 + l1 * w2 * g1


@triton.jit
def _softplus(x):
    # softplus with threshold 20, as mamba_ssm; log(1 + e^x) written to stay exact for very negative x
    e = tl.exp(x)
    small = x < -15.0
    return tl.where(x > 20.0, x, tl.where(small, e, tl.log(1.0 + e)))


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
    out_ptr, states_ptr, hs_ptr, idx_ptr,
    dim, L, N, per_group, n_chunks, n_routes,
    s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp, s_ob, s_od, s_op,
    s_Bb, s_Bg, s_Bn, s_Bp, s_Cb, s_Cg, s_Cn, s_Cp,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, NP: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr, RETURN_STATES: tl.constexpr, GATHER: tl.constexpr,
    COVERS_ALL: tl.constexpr, A_LOG: tl.constexpr,
):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_n = tl.arange(0, NP)
    mask_n = offs_n < N
    cols = tl.arange(0, BLOCK_L)
    # GATHER: the program owns channels [c0, c0 + BLOCK_D) of the shared map and runs every route over
    # them in turn, so it alone writes those channels of the merged output (no atomics).  Otherwise it
    # owns one tile of BLOCK_D rows of one group and n_routes is 1.
    c_offs = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    for g_loop in range(n_routes):
        g, offs_d, mask_d, u_rows = _route_rows(pid_d, g_loop, c_offs, dim, per_group, BLOCK_D, GATHER)
        offs_d64 = offs_d.to(tl.int64)
        _fwd_route(
            u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
            out_ptr, states_ptr, hs_ptr, idx_ptr,
            b, g, offs_d, offs_d64, mask_d, u_rows, offs_n, mask_n, cols, _keeps_merged(g_loop, COVERS_ALL),
            dim, L, N, n_chunks,
            s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp, s_ob, s_od, s_op,
            s_Bb, s_Bg, s_Bn, s_Bp, s_Cb, s_Cg, s_Cn, s_Cp,
            BLOCK_D, BLOCK_L, NP, HAS_D, HAS_Z, HAS_BIAS, HAS_H0, SOFTPLUS, REVERSE, RETURN_STATES, GATHER, A_LOG,
        )
        if GATHER:
            tl.debug_barrier()  # the next route reads back what this one added to the merged output


@triton.jit
def _fwd_route(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
    out_ptr, states_ptr, hs_ptr, idx_ptr,
    b, g, offs_d, offs_d64, mask_d, u_rows, offs_n, mask_n, cols, keep_merged,
    dim, L, N, n_chunks,
    s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp, s_ob, s_od, s_op,
    s_Bb, s_Bg, s_Bn, s_Bp, s_Cb, s_Cg, s_Cn, s_Cp,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, NP: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr, RETURN_STATES: tl.constexpr, GATHER: tl.constexpr,
    A_LOG: tl.constexpr,
):
    """One route (or one row tile) of the forward: all chunks of rows ``offs_d`` of batch row ``b``."""
    bias = _channel_vector(bias_ptr, offs_d, mask_d, HAS_BIAS)
    Dv = _channel_vector(D_ptr, offs_d, mask_d, HAS_D)
    st_mask = mask_d[:, None] & mask_n[None, :]
    carry = _state_tile(h0_ptr, b, dim, offs_d64, offs_n, N, st_mask, BLOCK_D, NP, HAS_H0)

    # (loading the next chunk's inputs during this one, as the backward does, made it slower: H100, D96 56x56,
    # 16 x 64 tiles, 1.29-1.36 -> 1.74 ms)
    for c in range(n_chunks):
        pos, mask_l, mask_p, u, dt = _chunk_inputs(u_ptr, delta_ptr, idx_ptr, b, g, c, L, u_rows, offs_d64, mask_d,
                                                   cols, s_ub, s_ud, s_up, s_db, s_dd, s_dp, BLOCK_L, REVERSE, GATHER)
        mstep = mask_d[:, None] & mask_l[None, :]  # steps of the sequence (not the tail of the last chunk)
        m2 = mask_d[:, None] & mask_p[None, :]  # elements that exist in memory
        if GATHER and not RETURN_STATES:  # the merged output this route adds onto, read before the scans
            # (its latency then hides behind them; H100, D96 56x56: 1.37 -> 1.29-1.36 ms)
            o_ptrs = out_ptr + b * s_ob + u_rows[:, None] * s_od + pos[None, :] * s_op
            merged = tl.load(o_ptrs, mask=m2 & keep_merged, other=0.0)
        u = u.to(tl.float32)
        dt = dt.to(tl.float32)
        if HAS_BIAS:
            dt = dt + bias[:, None]
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(mstep, dt, 0.0)  # tail steps: a = 1, b = 0
        dtu = dt * u
        if HAS_D:
            y = u * Dv[:, None]
        else:
            y = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
        for n in range(N):
            A_n = _load_A(A_ptr, offs_d64 * N + n, mask_d, A_LOG) * 1.4426950408889634
            B_n = tl.load(B_ptr + b * s_Bb + g * s_Bg + n * s_Bn + pos * s_Bp, mask=mask_p, other=0.0).to(tl.float32)
            a = tl.exp2(dt * A_n[:, None])
            bx = dtu * B_n[None, :]
            pa, h = tl.associative_scan((a, bx), 1, _combine)
            sel = offs_n[None, :] == n
            h_in = tl.sum(tl.where(sel, carry, 0.0), axis=1)
            h = h + pa * h_in[:, None]
            h_last = tl.sum(tl.where(cols[None, :] == BLOCK_L - 1, h, 0.0), axis=1)
            carry = tl.where(sel, h_last[:, None], carry)
            if RETURN_STATES:
                tl.store(hs_ptr + ((b * dim + offs_d64[:, None]) * N + n) * L + pos[None, :],
                         h.to(hs_ptr.dtype.element_ty), mask=m2)
            else:
                C_n = tl.load(C_ptr + b * s_Cb + g * s_Cg + n * s_Cn + pos * s_Cp, mask=mask_p, other=0.0).to(tl.float32)
                y += h * C_n[None, :]
        tl.store(states_ptr + ((b * dim + offs_d64[:, None]) * n_chunks + c) * N + offs_n[None, :], carry,
                 mask=st_mask)
        if not RETURN_STATES:
            if HAS_Z:
                zz = tl.load(z_ptr + b * s_zb + offs_d64[:, None] * s_zd + pos[None, :] * s_zp, mask=m2, other=0.0).to(tl.float32)
                y = y * zz / (1.0 + tl.exp(-zz))
            if GATHER:  # merge: add onto the pixels (this program alone owns these channels; a route
                # visits a pixel at most once, so no two lanes of one chunk touch the same element)
                tl.store(o_ptrs, merged + y, mask=m2)
            else:
                tl.store(out_ptr + b * s_ob + offs_d64[:, None] * s_od + pos[None, :] * s_op, y.to(out_ptr.dtype.element_ty),
                         mask=m2)


@triton.jit
def _scan_fwd_seq_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
    out_ptr, states_ptr, idx_ptr,
    dim, L, N, per_group, n_chunks, n_routes,
    s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp, s_ob, s_od, s_op,
    s_Bb, s_Bg, s_Bn, s_Bp, s_Cb, s_Cg, s_Cn, s_Cp,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, NP: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr, GATHER: tl.constexpr, COVERS_ALL: tl.constexpr,
    A_LOG: tl.constexpr,
):
    """The forward walking the sequence one step at a time with the whole (BLOCK_D, N) state in registers.

    Same arguments, outputs and chunk-state checkpoints (every ``BLOCK_L`` steps) as ``_scan_fwd_kernel``
    without ``RETURN_STATES``.  Per step and channel it costs N exponentials and multiply-adds and one
    reduction over N, where the chunked kernel runs one associative scan and two cross-lane reductions per
    state: the better choice for wide states (N = 16) when batch x channels fills the GPU on its own.
    """
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_n = tl.arange(0, NP)
    mask_n = offs_n < N
    c_offs = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    for g_loop in range(n_routes):
        g, offs_d, mask_d, u_rows = _route_rows(pid_d, g_loop, c_offs, dim, per_group, BLOCK_D, GATHER)
        offs_d64 = offs_d.to(tl.int64)
        st_mask = mask_d[:, None] & mask_n[None, :]
        A2 = _load_A(A_ptr, offs_d64[:, None] * N + offs_n[None, :], st_mask, A_LOG) * 1.4426950408889634
        bias = _channel_vector(bias_ptr, offs_d, mask_d, HAS_BIAS)
        Dv = _channel_vector(D_ptr, offs_d, mask_d, HAS_D)
        h = _state_tile(h0_ptr, b, dim, offs_d64, offs_n, N, st_mask, BLOCK_D, NP, HAS_H0)
        keep_merged = _keeps_merged(g_loop, COVERS_ALL)
        # step s + 1's inputs are loaded while step s computes (a step's own work is far shorter than a
        # load's latency: H200, bf16 inference, batch 128, 64 x 4-warp tiles: efficient_vmamba_base 4843 -> 5904
        # img/s, vanilla_vmamba_tiny 1610 -> 2758)
        pos_n, ex_n, u_n, dt_n, B_n, C_n, z_n = _seq_step_inputs(
            u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, idx_ptr, b, g, L * 0, L, u_rows, offs_d64, mask_d, offs_n, mask_n,
            s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp, s_Bb, s_Bg, s_Bn, s_Bp, s_Cb, s_Cg, s_Cn, s_Cp,
            HAS_Z, REVERSE, GATHER)
        for c in range(n_chunks):
            for j in range(0, tl.minimum(BLOCK_L, L - c * BLOCK_L)):
                s = c * BLOCK_L + j
                pos, exists, u, dt, Bs, Cs, zz = pos_n, ex_n, u_n, dt_n, B_n, C_n, z_n
                pos_n, ex_n, u_n, dt_n, B_n, C_n, z_n = _seq_step_inputs(
                    u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, idx_ptr, b, g, s + 1, L, u_rows, offs_d64, mask_d,
                    offs_n, mask_n, s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp,
                    s_Bb, s_Bg, s_Bn, s_Bp, s_Cb, s_Cg, s_Cn, s_Cp, HAS_Z, REVERSE, GATHER)
                m = mask_d & exists
                if HAS_BIAS:
                    dt = dt + bias
                if SOFTPLUS:
                    dt = _softplus(dt)
                h = tl.exp2(dt[:, None] * A2) * h + (dt * u)[:, None] * Bs[None, :]
                y = tl.sum(h * Cs[None, :], axis=1)
                if HAS_D:
                    y += u * Dv
                if HAS_Z:
                    y = y * zz / (1.0 + tl.exp(-zz))
                if GATHER:  # this program alone owns these channels of the merged map (see _scan_fwd_kernel)
                    o_ptrs = out_ptr + b * s_ob + u_rows * s_od + pos * s_op
                    tl.store(o_ptrs, tl.load(o_ptrs, mask=m & keep_merged, other=0.0) + y, mask=m)
                else:
                    tl.store(out_ptr + b * s_ob + offs_d64 * s_od + pos * s_op, y.to(out_ptr.dtype.element_ty), mask=m)
            tl.store(states_ptr + ((b * dim + offs_d64[:, None]) * n_chunks + c) * N + offs_n[None, :], h,
                     mask=st_mask)
        if GATHER:
            tl.debug_barrier()  # the next route reads back what this one added to the merged output


@triton.jit
def _seq_step_inputs(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, idx_ptr, b, g, s, L, u_rows, offs_d64, mask_d, offs_n,
                     mask_n, s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp, s_Bb, s_Bg, s_Bn, s_Bp,
                     s_Cb, s_Cg, s_Cn, s_Cp, HAS_Z: tl.constexpr, REVERSE: tl.constexpr, GATHER: tl.constexpr):
    """Inputs of step ``s`` (nothing is read for s >= L): (pos, the pixel exists, u, raw delta, B, C, z)."""
    in_range = s < L
    if GATHER:  # -1: a padding pixel, read as zeros but still a step (the state decays)
        pos = tl.load(idx_ptr + g * L + s, mask=in_range, other=-1)
        exists = pos >= 0
        pos = tl.maximum(pos, 0)
    else:
        exists = in_range
        if REVERSE:
            pos = tl.maximum(L - 1 - s, 0)
        else:
            pos = s
    m = mask_d & exists
    u = tl.load(u_ptr + b * s_ub + u_rows * s_ud + pos * s_up, mask=m, other=0.0).to(tl.float32)
    dt = tl.load(delta_ptr + b * s_db + offs_d64 * s_dd + pos * s_dp, mask=m, other=0.0).to(tl.float32)
    Bs = tl.load(B_ptr + b * s_Bb + g * s_Bg + offs_n * s_Bn + pos * s_Bp, mask=mask_n & exists, other=0.0)
    Cs = tl.load(C_ptr + b * s_Cb + g * s_Cg + offs_n * s_Cn + pos * s_Cp, mask=mask_n & exists, other=0.0)
    if HAS_Z:
        zz = tl.load(z_ptr + b * s_zb + offs_d64 * s_zd + pos * s_zp, mask=m, other=0.0).to(tl.float32)
    else:
        zz = u
    return pos, exists, u, dt, Bs.to(tl.float32), Cs.to(tl.float32), zz


@triton.jit
def _load_A(A_ptr, offsets, mask, A_LOG: tl.constexpr):
    """A (negative, fp32) at ``offsets``: A_ptr holds A itself, or with ``A_LOG`` log(-A) (Mamba's ``A_log``
    parameter), whose -exp is then taken here rather than by a separate pass."""
    values = tl.load(A_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if A_LOG:
        values = -tl.exp(values)
    return values


@triton.jit
def _channel_vector(ptr, offs_d, mask_d, PRESENT: tl.constexpr):
    """(BLOCK_D,) fp32 values of a per-channel parameter (delta bias, D) at channels ``offs_d``; zeros if absent."""
    if PRESENT:
        values = tl.load(ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        values = tl.zeros_like(offs_d).to(tl.float32)
    return values


@triton.jit
def _state_tile(ptr, b, dim, offs_d64, offs_n, N, st_mask, BLOCK_D: tl.constexpr, NP: tl.constexpr,
                PRESENT: tl.constexpr):
    """(BLOCK_D, NP) fp32 rows of a (batch, dim, N) state (initial state, final-state gradient) for batch row
    ``b``; zeros if absent."""
    if PRESENT:
        tile = tl.load(ptr + (b * dim + offs_d64[:, None]) * N + offs_n[None, :], mask=st_mask, other=0.0)
    else:
        tile = tl.zeros((BLOCK_D, NP), dtype=tl.float32)
    return tile


@triton.jit
def _keeps_merged(g_loop, COVERS_ALL: tl.constexpr):
    """Whether route ``g_loop`` adds onto the merged map (read-modify-write) rather than writing it.

    When every route visits every pixel (``COVERS_ALL``), the first route writes the whole map, so the
    map needs no zero fill and the first pass no read."""
    if COVERS_ALL:
        keep = g_loop > 0
    else:
        keep = g_loop >= 0
    return keep


@triton.jit
def _route_rows(pid_d, g_loop, c_offs, dim, per_group, BLOCK_D: tl.constexpr, GATHER: tl.constexpr):
    """(group g, rows offs_d, their mask, rows of u) that program ``pid_d`` handles in route loop step ``g_loop``.

    GATHER: route g_loop's copy of the shared map's channels ``c_offs`` (u, the shared map, is read at
    c_offs itself).  Otherwise the program's one tile of rows, in the group that holds it.
    """
    if GATHER:
        g = g_loop
        offs_d = g * per_group + c_offs
        mask_d = c_offs < per_group
        u_rows = c_offs.to(tl.int64)
    else:
        g = (pid_d * BLOCK_D) // per_group
        offs_d = c_offs
        mask_d = offs_d < dim
        u_rows = offs_d.to(tl.int64)
    return g, offs_d, mask_d, u_rows


@triton.jit
def _chunk_positions(idx_ptr, g, s, L, GATHER: tl.constexpr, REVERSE: tl.constexpr):
    """Memory positions of steps ``s`` of route/group ``g``: (pos, step exists, element exists)."""
    mask_l = s < L
    if GATHER:
        # route g's step s reads pixel idx[g, s] of the pixel-ordered maps; -1 is a padding pixel:
        # it reads zeros but remains a step (it decays the state by exp(softplus(delta_bias) A))
        pos = tl.load(idx_ptr + g * L + s, mask=mask_l, other=-1)
        mask_p = pos >= 0
        pos = tl.where(mask_p, pos, 0)
    else:
        mask_p = mask_l
        if REVERSE:
            pos = L - 1 - s
        else:
            pos = s
    return pos, mask_l, mask_p


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, states_ptr,
    dout_ptr, dlast_ptr, idx_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr, dbias_ptr, dh0_ptr, part_stride,
    dim, L, P, N, per_group, n_chunks, n_routes, tiles_per_group,
    s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp, s_gb, s_gd, s_gp,
    s_Bb, s_Bg, s_Bn, s_Bp, s_Cb, s_Cg, s_Cn, s_Cp,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, NP: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    HAS_DLAST: tl.constexpr, SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr, RETURN_STATES: tl.constexpr,
    PARTIALS: tl.constexpr, GATHER: tl.constexpr, COVERS_ALL: tl.constexpr, A_LOG: tl.constexpr,
    PREFETCH: tl.constexpr,
):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_n = tl.arange(0, NP)
    mask_n = offs_n < N
    cols = tl.arange(0, BLOCK_L)
    c_offs = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n_groups = dim // per_group
    tile = pid_d % tiles_per_group  # the channel tile within its group (GATHER: pid_d itself)
    for g_loop in range(n_routes):  # as in the forward: GATHER runs every route over its channel tile
        g, offs_d, mask_d, u_rows = _route_rows(pid_d, g_loop, c_offs, dim, per_group, BLOCK_D, GATHER)
        if PARTIALS:
            # partial rows (batch, G, tiles_per_group, N, P), one per channel tile, summed afterwards
            dB_base = dB_ptr + ((b * n_groups + g) * tiles_per_group + tile) * N * P
            dC_base = dC_ptr + ((b * n_groups + g) * tiles_per_group + tile) * N * P
        else:
            # fp32 accumulators shaped like B / C: (batch, G, N, P), contiguous
            dB_base = dB_ptr + (b * n_groups + g) * N * P
            dC_base = dC_ptr + (b * n_groups + g) * N * P
        _bwd_route(
            u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, states_ptr,
            dout_ptr, dlast_ptr, idx_ptr,
            du_ptr, ddelta_ptr, dA_ptr, dB_base, dC_base, dD_ptr, dz_ptr, dbias_ptr, dh0_ptr, part_stride,
            b, g, offs_d.to(tl.int64), offs_d, mask_d, u_rows, offs_n, mask_n, cols, _keeps_merged(g_loop, COVERS_ALL),
            dim, L, P, N, n_chunks,
            s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp, s_gb, s_gd, s_gp,
            s_Bb, s_Bg, s_Bn, s_Bp, s_Cb, s_Cg, s_Cn, s_Cp,
            BLOCK_D, BLOCK_L, NP, HAS_D, HAS_Z, HAS_BIAS, HAS_H0, HAS_DLAST, SOFTPLUS, REVERSE, RETURN_STATES,
            PARTIALS, GATHER, A_LOG, PREFETCH,
        )
        if GATHER:
            tl.debug_barrier()  # the next route reads back what this one added to du


@triton.jit
def _bwd_route(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, states_ptr,
    dout_ptr, dlast_ptr, idx_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_base, dC_base, dD_ptr, dz_ptr, dbias_ptr, dh0_ptr, part_stride,
    b, g, offs_d64, offs_d, mask_d, u_rows, offs_n, mask_n, cols, keep_merged,
    dim, L, P, N, n_chunks,
    s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp, s_gb, s_gd, s_gp,
    s_Bb, s_Bg, s_Bn, s_Bp, s_Cb, s_Cg, s_Cn, s_Cp,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, NP: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    HAS_DLAST: tl.constexpr, SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr, RETURN_STATES: tl.constexpr,
    PARTIALS: tl.constexpr, GATHER: tl.constexpr, A_LOG: tl.constexpr, PREFETCH: tl.constexpr,
):
    """One route (or one row tile) of the backward: chunks in reverse order, rows ``offs_d`` of batch row ``b``."""
    st_mask = mask_d[:, None] & mask_n[None, :]
    bias = _channel_vector(bias_ptr, offs_d, mask_d, HAS_BIAS)
    Dv = _channel_vector(D_ptr, offs_d, mask_d, HAS_D)
    gcarry = _state_tile(dlast_ptr, b, dim, offs_d64, offs_n, N, st_mask, BLOCK_D, NP, HAS_DLAST)
    ones = tl.full((BLOCK_D, BLOCK_L), 1.0, tl.float32)
    # per-step accumulators, reduced over time once at the end (not once per chunk)
    dA_acc = tl.zeros((BLOCK_D, NP), dtype=tl.float32)
    dA1_acc = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)  # used when N == 1
    dD_acc = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)

    # PREFETCH: the inputs of the chunk before are loaded while this one computes (a chunk's work is short
    # against a load's latency); it holds three more tiles in registers, so only small tiles use it
    if PREFETCH:
        pos_n, ml_n, mp_n, u_n, raw_n, dout_n, z_n = _bwd_chunk_inputs(
            u_ptr, delta_ptr, dout_ptr, z_ptr, idx_ptr, b, g, n_chunks - 1, L, u_rows, offs_d64, mask_d, cols,
            s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp, s_gb, s_gd, s_gp,
            BLOCK_L, HAS_Z, REVERSE, RETURN_STATES, GATHER)
    for ci in range(n_chunks):
        c = n_chunks - 1 - ci
        if PREFETCH:  # (the last chunk loads chunk 0 again, unused: one chunk's loads per route)
            pos, mask_l, mask_p, u, raw, dout, zz = pos_n, ml_n, mp_n, u_n, raw_n, dout_n, z_n
            pos_n, ml_n, mp_n, u_n, raw_n, dout_n, z_n = _bwd_chunk_inputs(
                u_ptr, delta_ptr, dout_ptr, z_ptr, idx_ptr, b, g, tl.maximum(c - 1, 0), L, u_rows, offs_d64,
                mask_d, cols, s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp, s_gb, s_gd, s_gp,
                BLOCK_L, HAS_Z, REVERSE, RETURN_STATES, GATHER)
        else:
            pos, mask_l, mask_p, u, raw, dout, zz = _bwd_chunk_inputs(
                u_ptr, delta_ptr, dout_ptr, z_ptr, idx_ptr, b, g, c, L, u_rows, offs_d64, mask_d, cols,
                s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp, s_gb, s_gd, s_gp,
                BLOCK_L, HAS_Z, REVERSE, RETURN_STATES, GATHER)
        mstep = mask_d[:, None] & mask_l[None, :]  # steps of the sequence (not the tail of the last chunk)
        m2 = mask_d[:, None] & mask_p[None, :]  # elements that exist in memory
        if GATHER:
            du_ptrs = du_ptr + b * s_ub + u_rows[:, None] * s_ud + pos[None, :] * s_up
            if PREFETCH:  # the merged du this program adds onto, read early (its latency hides behind the scans)
                du_merged = tl.load(du_ptrs, mask=m2 & keep_merged, other=0.0)
        u = u.to(tl.float32)
        raw = raw.to(tl.float32)
        if HAS_BIAS:
            raw = raw + bias[:, None]
        if SOFTPLUS:
            dt = _softplus(raw)
        else:
            dt = raw
        dt = tl.where(mstep, dt, 0.0)
        dtu = dt * u
        if RETURN_STATES:
            dy = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
        else:
            dout = dout.to(tl.float32)
            if HAS_Z:
                zz = zz.to(tl.float32)
                sig_z = 1.0 / (1.0 + tl.exp(-zz))
                dy = dout * zz * sig_z
            else:
                dy = dout
        if HAS_D:
            y_pre = u * Dv[:, None]
            du = dy * Dv[:, None]
            dD_acc += dy * u
        else:
            y_pre = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
            du = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
        ddt = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
        for n in range(N):
            A_nat = _load_A(A_ptr, offs_d64 * N + n, mask_d, A_LOG)
            B_n = tl.load(B_ptr + b * s_Bb + g * s_Bg + n * s_Bn + pos * s_Bp, mask=mask_p, other=0.0).to(tl.float32)
            a = tl.exp2(dt * (A_nat * 1.4426950408889634)[:, None])
            bx = dtu * B_n[None, :]
            pa, h = tl.associative_scan((a, bx), 1, _combine)
            if c > 0:
                h_in = tl.load(states_ptr + ((b * dim + offs_d64) * n_chunks + c - 1) * N + n, mask=mask_d, other=0.0)
            else:
                if HAS_H0:
                    h_in = tl.load(h0_ptr + (b * dim + offs_d64) * N + n, mask=mask_d, other=0.0)
                else:
                    h_in = tl.zeros((BLOCK_D,), dtype=tl.float32)
            h = h + pa * h_in[:, None]
            if RETURN_STATES:
                e = tl.load(dout_ptr + ((b * dim + offs_d64[:, None]) * N + n) * L + pos[None, :], mask=m2,
                            other=0.0).to(tl.float32)
            else:
                C_n = tl.load(C_ptr + b * s_Cb + g * s_Cg + n * s_Cn + pos * s_Cp, mask=mask_p, other=0.0).to(tl.float32)
                e = dy * C_n[None, :]
                y_pre += h * C_n[None, :]
                dC_row = tl.sum(dy * h, axis=0)
                if PARTIALS:
                    tl.store(dC_base + n * P + pos, dC_row, mask=mask_p)
                else:
                    tl.atomic_add(dC_base + n * P + pos, dC_row, mask=mask_p)
            sel = offs_n[None, :] == n
            g_in = tl.sum(tl.where(sel, gcarry, 0.0), axis=1)
            e = tl.where(cols[None, :] == BLOCK_L - 1, e + g_in[:, None], e)
            _w, _l, G = tl.associative_scan((ones, a, e), 1, _combine_rev, reverse=True)
            aG = a * G
            g_first = tl.sum(tl.where(cols[None, :] == 0, aG, 0.0), axis=1)
            gcarry = tl.where(sel, g_first[:, None], gcarry)
            ah_prev = h - bx  # a_t h_{t-1}
            GdtB = G * B_n[None, :]
            du += GdtB * dt
            ddt += GdtB * u + G * ah_prev * A_nat[:, None]
            if NP == 1:
                dA1_acc += G * dt * ah_prev
            else:
                dA_acc += tl.where(sel, tl.sum(G * dt * ah_prev, axis=1)[:, None], 0.0)
            dB_row = tl.sum(G * dtu, axis=0)
            if PARTIALS:
                tl.store(dB_base + n * P + pos, dB_row, mask=mask_p)
            else:
                tl.atomic_add(dB_base + n * P + pos, dB_row, mask=mask_p)
        if (not RETURN_STATES) and HAS_Z:
            # d/dz [y_pre * z * sigmoid(z)] = y_pre * sig * (1 + z (1 - sig))
            dz = dout * y_pre * sig_z * (1.0 + zz * (1.0 - sig_z))
            tl.store(dz_ptr + b * s_zb + offs_d64[:, None] * s_zd + pos[None, :] * s_zp, dz.to(dz_ptr.dtype.element_ty), mask=m2)
        if SOFTPLUS:
            ddt = tl.where(raw > 20.0, ddt, ddt / (1.0 + tl.exp(-raw)))
        ddt = tl.where(mstep, ddt, 0.0)
        dbias_acc += ddt
        if GATHER:  # every route adds its du onto the shared map's pixel (this program owns the channels)
            if not PREFETCH:
                du_merged = tl.load(du_ptrs, mask=m2 & keep_merged, other=0.0)
            tl.store(du_ptrs, du_merged + du, mask=m2)
            tl.store(ddelta_ptr + b * s_db + offs_d64[:, None] * s_dd + pos[None, :] * s_dp,
                     ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)
        else:
            tl.store(du_ptr + b * s_ub + offs_d64[:, None] * s_ud + pos[None, :] * s_up, du.to(du_ptr.dtype.element_ty),
                     mask=m2)
            tl.store(ddelta_ptr + b * s_db + offs_d64[:, None] * s_dd + pos[None, :] * s_dp,
                     ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)
    if NP == 1:
        dA_acc = tl.sum(dA1_acc, axis=1)[:, None]
    # per-batch-row partials of dA (dim, N), dD (dim,) and d(delta_bias) (dim,), one row of part_stride
    # values per batch row, summed over the batch afterwards
    part = b * part_stride + offs_d64
    if A_LOG:  # the gradient of log(-A): dA * A
        dA_acc = dA_acc * _load_A(A_ptr, offs_d64[:, None] * N + offs_n[None, :], st_mask, A_LOG)
    tl.store(dA_ptr + b * part_stride + offs_d64[:, None] * N + offs_n[None, :], dA_acc, mask=st_mask)
    if HAS_H0:
        tl.store(dh0_ptr + (b * dim + offs_d64[:, None]) * N + offs_n[None, :], gcarry, mask=st_mask)
    if HAS_D:
        tl.store(dD_ptr + part, tl.sum(dD_acc, axis=1), mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_ptr + part, tl.sum(dbias_acc, axis=1), mask=mask_d)


@triton.jit
def _chunk_inputs(u_ptr, delta_ptr, idx_ptr, b, g, c, L, u_rows, offs_d64, mask_d, cols,
                  s_ub, s_ud, s_up, s_db, s_dd, s_dp, BLOCK_L: tl.constexpr, REVERSE: tl.constexpr,
                  GATHER: tl.constexpr):
    """Chunk ``c``'s positions and (BLOCK_D, BLOCK_L) inputs of the forward in their stored dtypes:
    (pos, step exists, element exists, u, raw delta)."""
    pos, mask_l, mask_p = _chunk_positions(idx_ptr, g, c * BLOCK_L + cols, L, GATHER, REVERSE)
    m2 = mask_d[:, None] & mask_p[None, :]
    u = tl.load(u_ptr + b * s_ub + u_rows[:, None] * s_ud + pos[None, :] * s_up, mask=m2, other=0.0)
    dt = tl.load(delta_ptr + b * s_db + offs_d64[:, None] * s_dd + pos[None, :] * s_dp, mask=m2, other=0.0)
    return pos, mask_l, mask_p, u, dt


@triton.jit
def _bwd_chunk_inputs(u_ptr, delta_ptr, dout_ptr, z_ptr, idx_ptr, b, g, c, L, u_rows, offs_d64, mask_d, cols,
                      s_ub, s_ud, s_up, s_db, s_dd, s_dp, s_zb, s_zd, s_zp, s_gb, s_gd, s_gp,
                      BLOCK_L: tl.constexpr, HAS_Z: tl.constexpr, REVERSE: tl.constexpr,
                      RETURN_STATES: tl.constexpr, GATHER: tl.constexpr):
    """Chunk ``c``'s positions and (BLOCK_D, BLOCK_L) inputs of the backward, in their stored dtypes:
    (pos, step exists, element exists, u, raw delta, dout (zeros with RETURN_STATES), z (u without HAS_Z))."""
    pos, mask_l, mask_p, u, raw = _chunk_inputs(u_ptr, delta_ptr, idx_ptr, b, g, c, L, u_rows, offs_d64, mask_d,
                                                cols, s_ub, s_ud, s_up, s_db, s_dd, s_dp, BLOCK_L, REVERSE, GATHER)
    m2 = mask_d[:, None] & mask_p[None, :]
    if RETURN_STATES:
        dout = tl.zeros(u.shape, dtype=tl.float32)
    else:
        dout = tl.load(dout_ptr + b * s_gb + u_rows[:, None] * s_gd + pos[None, :] * s_gp, mask=m2, other=0.0)
    if HAS_Z:
        zz = tl.load(z_ptr + b * s_zb + offs_d64[:, None] * s_zd + pos[None, :] * s_zp, mask=m2, other=0.0)
    else:
        zz = u
    return pos, mask_l, mask_p, u, raw, dout, zz


# the launches (kernel[grid](...) with the compiled kernel remembered per argument layout: less host time)
_launch_fwd = CachedLauncher(_scan_fwd_kernel)
_launch_fwd_seq = CachedLauncher(_scan_fwd_seq_kernel)
_launch_bwd = CachedLauncher(_scan_bwd_kernel)


def _bwd_prefetches(block_d: int, block_l: int, num_warps: int, n_state: int) -> bool:
    """Whether the backward with this tile and state size loads the next chunk's inputs during the current one
    (see ``BWD_PREFETCH_MAX_PER_THREAD``)."""
    return block_d * block_l <= BWD_PREFETCH_MAX_PER_THREAD * 32 * num_warps and n_state <= BWD_PREFETCH_MAX_STATES


def _with_grad_buffer(t: torch.Tensor, make, **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
    """(t, its gradient buffer ``make(t, **kwargs)``) where the buffer has t's strides, so the kernel writes the
    gradient through the input's strides; ``make`` is ``torch.empty_like`` / ``torch.zeros_like``, which keep the
    strides of a dense, non-overlapping tensor.  For any other t (overlapping or gapped strides), a
    contiguous copy of t and a buffer like it."""
    buffer = make(t, **kwargs)
    if buffer.stride() != t.stride():
        t = t.contiguous()
        buffer = make(t, **kwargs)
    return t, buffer


def _strides(t: Optional[torch.Tensor], dims: int) -> Tuple[int, ...]:
    """The tensor's strides (zeros for an absent tensor); every tensor is read through its own strides."""
    return tuple(t.stride()) if t is not None else (0,) * dims


def scan_fwd(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    initial_state: Optional[torch.Tensor], delta_softplus: bool, reverse: bool, return_states: bool,
    out_dtype: torch.dtype, route_index: Optional[torch.Tensor] = None, covers_all: bool = False,
    a_is_log: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run the forward kernel.  B, C must be (batch, G, N, L).

    With ``route_index`` (G, L) int32 the scan is fused with a gather and a
    merge: u is a shared map (batch, dim // G, P), delta (batch, dim, P) and
    B, C (batch, G, N, P) are in pixel order, route g's step s reads pixel
    ``route_index[g, s]`` (-1: padding, skipped), and ``out`` is the merged
    (batch, dim // G, P) fp32 sum of all routes' outputs.  ``covers_all`` promises
    that every route visits every pixel (no padding, L = P): the first route then
    writes the merged map instead of adding onto a zero-filled one.

    ``a_is_log``: A holds log(-A) (Mamba's ``A_log`` parameter); the kernel takes -exp of it.

    Returns (out, chunk_states): out is y (batch, dim, L) in ``out_dtype`` or,
    with ``return_states``, h (batch, dim, N, L); chunk_states (batch, dim,
    n_chunks, N) fp32 holds the state after every chunk (the last one is the
    final state).
    """
    gather = route_index is not None
    batch, dim, length = delta.shape
    if gather:
        length = route_index.shape[1]
    n_state = A.shape[1]
    per_group = dim // B.shape[1]
    tiles = pick_tiles(dim, per_group, length, n_state, is_pixel_major(u))
    block_d, block_l, num_warps = tiles.fwd_block_d, tiles.block_l, tiles.fwd_warps
    n_chunks = triton.cdiv(length, block_l)
    A = A.contiguous()
    states = torch.empty(batch, dim, n_chunks, n_state, device=u.device, dtype=torch.float32)
    covers_all = covers_all and gather
    if gather:  # the merged map takes u's layout (channels-last in, channels-last out)
        out = torch.empty_like(u, dtype=torch.float32) if covers_all else torch.zeros_like(u, dtype=torch.float32)
        y_arg, hs_arg = out, states
    elif return_states:
        out = torch.empty(batch, dim, n_state, length, device=u.device, dtype=out_dtype)
        y_arg, hs_arg = states, out
    else:
        out = torch.empty(batch, dim, length, device=u.device, dtype=out_dtype)
        y_arg, hs_arg = out, states
    dummy = states
    sequential = None if return_states else pick_sequential_tiles(per_group, n_state, is_pixel_major(u))
    if sequential is not None:
        block_d, num_warps = sequential
    if gather:  # one program per channel tile of the shared map, running every route in turn
        grid = (triton.cdiv(per_group, block_d), batch)
        n_routes = dim // per_group
    else:
        grid = (triton.cdiv(dim, block_d), batch)
        n_routes = 1
    params = (D.contiguous() if D is not None else dummy, z if z is not None else dummy,
              delta_bias.contiguous() if delta_bias is not None else dummy,
              initial_state.float().contiguous() if initial_state is not None else dummy)
    index_arg = route_index if gather else states
    sizes = (dim, length, n_state, per_group, n_chunks, n_routes)
    in_strides = (*_strides(u, 3), *_strides(delta, 3), *_strides(z, 3))
    bc_strides = (*_strides(B, 4), *_strides(C, 4))
    flags = dict(BLOCK_D=block_d, BLOCK_L=block_l, NP=triton.next_power_of_2(n_state),
                 HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                 HAS_H0=initial_state is not None, SOFTPLUS=delta_softplus, REVERSE=reverse,
                 GATHER=gather, COVERS_ALL=covers_all, A_LOG=a_is_log, num_warps=num_warps)
    if sequential is not None:
        _launch_fwd_seq[grid](u, delta, A, B, C, *params, out, states, index_arg, *sizes, *in_strides,
                              *_strides(out, 3), *bc_strides, **flags)
    else:
        _launch_fwd[grid](u, delta, A, B, C, *params, y_arg, states, hs_arg, index_arg, *sizes, *in_strides,
                          *(_strides(out, 3) if not return_states else (0, 0, 0)), *bc_strides,
                          RETURN_STATES=return_states, **flags)
    return out, states


def scan_bwd(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    initial_state: Optional[torch.Tensor], chunk_states: torch.Tensor, dout: torch.Tensor,
    dlast: Optional[torch.Tensor], delta_softplus: bool, reverse: bool, return_states: bool,
    deterministic: bool, route_index: Optional[torch.Tensor] = None, covers_all: bool = False,
    a_is_log: bool = False, reduce_bc: bool = True,
):
    """Run the backward kernel.  Returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state);
    entries for absent inputs are None.  dB, dC come back in fp32 shaped (batch, G, N, L).  ``covers_all``:
    as in :func:`scan_fwd` (every route visits every pixel, so no gradient buffer needs a zero fill).
    ``a_is_log``: A holds log(-A) (as in :func:`scan_fwd`), and dA is the gradient of that log.

    ``reduce_bc=False``: dB and dC come back unreduced, as one fp32 tensor (2, batch, G, T, N, L) in the place
    of dB (None in that of dC) whose sum over dim 3 is (dB, dC): T per-channel-tile rows, or T = 1 where they
    were accumulated atomically; the caller sums them where it needs them (``torch.sum(t, 3, out=...)``)."""
    # every gradient takes its input's layout (du: u's, ddelta: delta's, dz: z's)
    if return_states:
        dout = dout.contiguous()
    gather = route_index is not None
    batch, dim, length = delta.shape
    pixels = length
    if gather:
        length = route_index.shape[1]
    n_state = A.shape[1]
    groups = B.shape[1]
    per_group = dim // groups
    tiles = pick_tiles(dim, per_group, length, n_state, is_pixel_major(u))
    block_d, block_l, num_warps = tiles.bwd_block_d, tiles.block_l, tiles.bwd_warps
    n_chunks = triton.cdiv(length, block_l)
    assert chunk_states.shape[2] == n_chunks, "forward and backward chunking differ"
    tiles_per_group = triton.cdiv(per_group, block_d)
    # dB / dC: each channel tile writes its own partial rows (no atomics, deterministic) unless that
    # buffer would be large (many tiles x states); then rows are added atomically into one buffer.  (H100: partials
    # made the fused backward faster, but the channel-first one slower: 3.50 -> 4.16 ms at 128,384,G4,N1,3136)
    partials = deterministic or (gather and tiles_per_group * n_state <= 32)
    covers_all = covers_all and gather
    f32 = dict(device=u.device, dtype=torch.float32)
    # a route need not visit every pixel: unvisited pixels get a zero gradient, unless covers_all
    fill = torch.empty_like if covers_all or not gather else torch.zeros_like
    u, du = _with_grad_buffer(u, fill, dtype=torch.float32) if gather else _with_grad_buffer(u, torch.empty_like)
    delta, ddelta = _with_grad_buffer(delta, fill)
    z, dz = _with_grad_buffer(z, torch.empty_like) if z is not None else (None, None)
    # one buffer of per-batch-row partials: [dA (dim*N) | dD (dim) | d(delta_bias) (dim)] per row
    part_stride = dim * n_state + 2 * dim
    parts = torch.empty(batch, part_stride, **f32)
    dh0 = torch.empty(batch, dim, n_state, **f32) if initial_state is not None else None
    # dB and dC in one buffer: partial rows (2, batch, G, tiles, N, P) or atomic accumulators (2, batch, G, N, P)
    if partials:
        dBC = (torch.empty if covers_all else torch.zeros)(2, batch, groups, tiles_per_group, n_state, pixels, **f32)
    else:
        dBC = torch.zeros(2, batch, groups, n_state, pixels, **f32)
    dummy = parts
    if gather:
        grid = (tiles_per_group, batch)
        n_routes = groups
    else:
        grid = (triton.cdiv(dim, block_d), batch)
        n_routes = 1
    _launch_bwd[grid](
        u, delta, A.contiguous(), B, C,
        D.contiguous() if D is not None else dummy,
        z if z is not None else dummy,
        delta_bias.contiguous() if delta_bias is not None else dummy,
        initial_state.float().contiguous() if initial_state is not None else dummy,
        chunk_states, dout,
        dlast.float().contiguous() if dlast is not None else dummy,
        route_index if gather else dummy,
        du, ddelta, parts, dBC[0], dBC[1], parts[:, dim * n_state:], dz if dz is not None else du,
        parts[:, dim * n_state + dim:], dh0 if dh0 is not None else dummy, part_stride,
        dim, length, pixels, n_state, per_group, n_chunks, n_routes, tiles_per_group,
        *_strides(u, 3), *_strides(delta, 3), *_strides(z, 3),
        *(_strides(dout, 3) if not return_states else (0, 0, 0)),
        *_strides(B, 4), *_strides(C, 4),
        BLOCK_D=block_d, BLOCK_L=block_l, NP=triton.next_power_of_2(n_state),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        HAS_H0=initial_state is not None, HAS_DLAST=dlast is not None,
        SOFTPLUS=delta_softplus, REVERSE=reverse, RETURN_STATES=return_states,
        PARTIALS=partials, GATHER=gather, COVERS_ALL=covers_all, A_LOG=a_is_log,
        PREFETCH=_bwd_prefetches(block_d, block_l, num_warps, n_state),
        num_warps=num_warps,
    )
    if not reduce_bc:
        d_bc = dBC if partials else dBC.unsqueeze(3)
        dB_out, dC_out = d_bc, None
    else:
        if partials:
            dBC = dBC.sum(3)
        dB_out, dC_out = dBC[0], dBC[1]
    part_sums = parts.sum(0)
    dA = part_sums[:dim * n_state].view(dim, n_state)
    dD = part_sums[dim * n_state:dim * n_state + dim] if D is not None else None
    dbias = part_sums[dim * n_state + dim:] if delta_bias is not None else None
    return du, ddelta, dA, dB_out, dC_out, dD, dz, dbias, dh0
