"""SS2D: the 2-D selective-scan mixer with pluggable scan patterns.

Data flow (VMamba, arXiv:2401.10166)::

    x ─ in_proj ─┬─ x ─ dwconv3x3 ─ act ─ forward_core ─ out_norm ─(* z)─ out_proj ─ dropout
                 └─ z ─ act (only when gate=True) ──────────────────────┘

``forward_core`` is scan -> per-route projections -> one batched selective
scan over the K routes -> merge; the scan pattern (``scan="cross"`` etc., see
:mod:`vmamba_zoo.scan`) decides the routes.

Parameter names and shapes follow the official VMamba checkpoints
(``classification/models/vmamba.py``), with K routes, inner width Di, state
size N and dt rank R:

==================  =================  =========================================
name                shape              meaning
==================  =================  =========================================
in_proj.weight      (Di or 2Di, C)     input projection (2Di with the gate z)
conv2d.weight/bias  (Di, 1, k, k)      depth-wise conv (bias optional)
x_proj_weight       (K, R + 2N, Di)    per-route projection to (dt, B, C)
dt_projs_weight     (K, Di, R)         per-route dt up-projection
dt_projs_bias       (K, Di)            per-route dt bias (inverse-softplus init)
A_logs              (K*Di, N)          A = -exp(A_logs), S4D-real init log(1..N)
Ds                  (K*Di,)            skip connection, ones
out_norm.*          (Di,)              LayerNorm over channels
out_proj.weight     (C, Di)            output projection
==================  =================  =========================================
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Type, Union

import torch
from torch import nn

from vmamba_zoo_kernels import selective_scan
from vmamba_zoo_kernels.dispatch import triton_available
from vmamba_zoo_kernels.layer_norm import layer_norm_silu_gate_triton
from vmamba_zoo_kernels.native_cpu import dwconv3x3_native, native_usable

from .conv import conv2d_keep_layout, depthwise3x3_fused, depthwise3x3_fused_applies, is_depthwise3x3
from .fused_core import can_fuse, ss2d_core_fused

from ..scan import ScanPattern, create_scan_pattern
from .linear import ChannelLinear
from .norm import LayerNorm, LayerNorm2d
from .param_cache import cached_cast, cached_derived

__all__ = ["SS2D", "dt_bias_init_"]

_HALF_DTYPES = (torch.float16, torch.bfloat16)


@torch.no_grad()
def dt_bias_init_(bias: torch.Tensor, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> torch.Tensor:
    """Mamba's dt-bias init: ``softplus(bias)`` log-uniform in [dt_min, dt_max] (in place)."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    dt = torch.exp(torch.rand_like(bias, dtype=torch.float32) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    # inverse of softplus: dt + log(1 - exp(-dt))
    return bias.copy_(dt + torch.log(-torch.expm1(-dt)))


class SS2D(nn.Module):
    """2-D selective-scan mixer (VMamba SS2D) with a pluggable scan pattern.

    Args:
        d_model: channels C of the input and output.
        d_state: SSM state size N.
        ssm_ratio: inner width Di = int(ssm_ratio * C).
        dt_rank: dt projection rank R; ``"auto"`` = ceil(C / 16).
        act_layer: activation after the conv and on the gate (SiLU).
        d_conv: depth-wise conv kernel size; < 2 disables the conv.
        conv_bias: bias in the depth-wise conv (True in v0, False in v2).
        bias: bias in in_proj / out_proj.
        gate: multiply by act(z) from a second in_proj half (v0: True, v2: False).
        dropout: dropout after out_proj.
        scan: registered scan-pattern name (``vmamba_zoo.scan.list_scan_patterns()``).
        scan_kwargs: extra constructor arguments of the scan pattern.
        channel_first: input/output layout (B, C, H, W) if True, else (B, H, W, C).
            Both layouts use identical parameters and give the same result.
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: Mamba's dt initialisation.
        norm_eps: epsilon of ``out_norm``.

    On CUDA, a channels-last mixer (``channel_first=False``) with a gather
    pattern (cross, uni, bi, atrous) runs the fused core
    (:mod:`vmamba_zoo.layers.fused_core`): the kernel reads the routes straight
    from the pixel-major map and merges in place, so the (B, K, D, L) route
    copies never exist.  On the CPU, where no autograd graph is needed (inference),
    the gather patterns run the same way on the native C kernel
    (:mod:`vmamba_zoo_kernels.native_cpu`), from either layout.  Set
    ``use_fused_kernel = False`` (class or instance attribute) to run the
    materialising :meth:`forward_core` instead.
    """

    use_fused_kernel: bool = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        dt_rank: Union[int, str] = "auto",
        act_layer: Type[nn.Module] = nn.SiLU,
        d_conv: int = 3,
        conv_bias: bool = True,
        bias: bool = False,
        gate: bool = True,
        dropout: float = 0.0,
        scan: str = "cross",
        scan_kwargs: Optional[Dict[str, Any]] = None,
        channel_first: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if d_model <= 0 or d_state <= 0:
            raise ValueError(f"d_model and d_state must be positive, got d_model={d_model}, d_state={d_state}")
        d_inner = int(ssm_ratio * d_model)
        if d_inner <= 0:
            raise ValueError(f"ssm_ratio={ssm_ratio} gives an empty inner width for d_model={d_model}")
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        if not isinstance(dt_rank, int) or dt_rank <= 0:
            raise ValueError(f"dt_rank must be a positive int or 'auto', got {dt_rank!r}")
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = d_inner
        self.dt_rank = dt_rank
        self.gate = gate
        self.channel_first = channel_first

        self.scan_pattern: ScanPattern = create_scan_pattern(scan, d_inner, **(scan_kwargs or {}))
        k = self.scan_pattern.num_routes
        self.num_routes = k

        self.in_proj = ChannelLinear(d_model, d_inner * (2 if gate else 1), bias=bias, channel_first=channel_first)
        self.act = act_layer()
        self.conv2d = nn.Conv2d(
            d_inner, d_inner, kernel_size=d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=conv_bias,
        ) if d_conv > 1 else None

        self.x_proj_weight = nn.Parameter(torch.empty(k, dt_rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        self.A_logs = nn.Parameter(torch.empty(k * d_inner, d_state))
        self.Ds = nn.Parameter(torch.empty(k * d_inner))
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True

        norm_cls = LayerNorm2d if channel_first else LayerNorm
        self.out_norm = norm_cls(d_inner, eps=norm_eps)
        self.out_proj = ChannelLinear(d_inner, d_model, bias=bias, channel_first=channel_first)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        self._dt_cfg = dict(dt_min=dt_min, dt_max=dt_max, dt_init=dt_init, dt_scale=dt_scale, dt_init_floor=dt_init_floor)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Initialise the stacked SSM parameters as VMamba does (Mamba recipe per route)."""
        cfg = self._dt_cfg
        # x_proj: nn.Linear's default init per route, bound 1/sqrt(Di)
        bound = self.d_inner ** -0.5
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        std = self.dt_rank ** -0.5 * cfg["dt_scale"]
        if cfg["dt_init"] == "constant":
            nn.init.constant_(self.dt_projs_weight, std)
        else:
            nn.init.uniform_(self.dt_projs_weight, -std, std)
        dt_bias_init_(self.dt_projs_bias, cfg["dt_min"], cfg["dt_max"], cfg["dt_init_floor"])
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_logs.copy_(torch.log(a).expand_as(self.A_logs))
        self.Ds.fill_(1.0)

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix a feature map.

        Args:
            x: (B, H, W, C), or (B, C, H, W) when ``channel_first``.
        Returns:
            Same layout and shape as ``x``.
        """
        if x.dim() != 4:
            raise ValueError(f"SS2D expects a 4-D map, got shape {tuple(x.shape)}")
        channel_axis = 1 if self.channel_first else -1
        if x.shape[channel_axis] != self.d_model:
            layout = "(B, C, H, W)" if self.channel_first else "(B, H, W, C)"
            raise ValueError(
                f"SS2D(d_model={self.d_model}, channel_first={self.channel_first}) expects {layout}, "
                f"got shape {tuple(x.shape)}")
        x = self.in_proj(x)
        z = None
        gate_fused = False
        if self.gate:
            x, z = x.chunk(2, dim=channel_axis)
            gate_fused = self._norm_gate_fused_applies(z)
            if not gate_fused:
                z = self.act(z)
        if not self.channel_first:
            x = x.permute(0, 3, 1, 2)
        if self._native_conv_act(x):  # CPU inference: depth-wise conv + SiLU in one native pass
            x = dwconv3x3_native(x, self.conv2d.weight, self.conv2d.bias, silu=True)  # float32 in and out
        elif self.conv2d is not None and type(self.act) is nn.SiLU and depthwise3x3_fused_applies(self.conv2d, x):
            x = depthwise3x3_fused(self.conv2d, x, silu=True)  # CUDA inference: one Triton pass
        else:
            if self.conv2d is not None:
                x = conv2d_keep_layout(self.conv2d, x)  # keeps a channels-last map channels-last (no copy)
            x = self.act(x)
        if self.use_fused_kernel and can_fuse(self, x):
            y = ss2d_core_fused(self, x)  # the same result without materialising the routes
        else:
            y = self.forward_core(x)  # (B, Di, H, W), float32 for 16-bit inputs
        if not self.channel_first:
            y = y.permute(0, 2, 3, 1)
        if gate_fused:  # CUDA inference: out_norm, SiLU(z) and the product in one Triton pass
            norm = self.out_norm
            y = layer_norm_silu_gate_triton(y.contiguous(), norm.weight, norm.bias, norm.eps, z, out_dtype=x.dtype)
            return self.dropout(self.out_proj(y))
        norm_weight = self.out_norm.weight
        y = self.out_norm(y.to(norm_weight.dtype) if norm_weight is not None else y).to(x.dtype)
        if z is not None:
            y = y * z
        return self.dropout(self.out_proj(y))

    def _norm_gate_fused_applies(self, z: torch.Tensor) -> bool:
        """Whether ``out_norm(y) * SiLU(z)`` runs as one Triton pass: CUDA inference of a channels-last mixer
        whose gate is SiLU and whose out_norm is a LayerNorm over the channels."""
        return (z.is_cuda and not torch.is_grad_enabled() and not self.channel_first and type(self.act) is nn.SiLU
                and isinstance(self.out_norm, nn.LayerNorm) and len(self.out_norm.normalized_shape) == 1
                and not torch.compiler.is_compiling() and triton_available())

    def _native_conv_act(self, x: torch.Tensor) -> bool:
        """Whether the depth-wise conv and activation can run as one native CPU pass (inference, a 3x3
        conv with padding 1, SiLU, float32)."""
        conv = self.conv2d
        return (conv is not None and x.device.type == "cpu" and x.dtype == torch.float32
                and type(self.act) is nn.SiLU and is_depthwise3x3(conv) and native_usable(x, conv.weight, conv.bias))

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """Scan, selective scan over all routes, merge.

        Args:
            x: (B, Di, H, W) after the depth-wise conv and activation.
        Returns:
            y: (B, Di, H, W) merged route outputs; float32 when ``x`` is 16-bit
            ("16-bit in, fp32 out"), else ``x``'s dtype.
        """
        batch, dim, height, width = x.shape
        k, n, r = self.num_routes, self.d_state, self.dt_rank
        pattern = self.scan_pattern
        xs = pattern.scan(x)  # (B, K, Di, L)
        length = xs.shape[-1]

        x_proj_weight, dt_projs_weight = cached_cast(self, (self.x_proj_weight, self.dt_projs_weight), xs.dtype,
                                                     tag="core_projections")
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, x_proj_weight)
        dts, bs, cs = torch.split(x_dbl, [r, n, n], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, dt_projs_weight)

        u = xs.reshape(batch, k * dim, length)
        delta = dts.reshape(batch, k * dim, length).to(u.dtype)
        a, d, delta_bias = cached_derived(  # reused across inference calls (host time), rebuilt with autograd on
            self, "core_scan_params", (self.A_logs, self.Ds, self.dt_projs_bias),
            lambda: (-torch.exp(self.A_logs.float()), self.Ds.float(), self.dt_projs_bias.float().reshape(-1)))
        bs, cs = bs.contiguous(), cs.contiguous()  # (B, K, N, L): the routes are the scan's groups
        out_dtype = torch.float32 if u.dtype in _HALF_DTYPES else None

        if pattern.fuses_states:
            h = selective_scan(u, delta, a, bs, cs, delta_bias=delta_bias, delta_softplus=True,
                               return_states=True, out_dtype=out_dtype)
            ys = pattern.read_out_states(h.reshape(batch, k, dim, n, length), cs, xs, d, height, width)
        else:
            ys = selective_scan(u, delta, a, bs, cs, d, delta_bias=delta_bias, delta_softplus=True,
                                out_dtype=out_dtype).reshape(batch, k, dim, length)
        return pattern.merge(ys, height, width)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, "
                f"routes={self.num_routes}, gate={self.gate}, channel_first={self.channel_first}")

