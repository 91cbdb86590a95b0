"""Spatial-Mamba's structure-aware state fusion (SASF) on one raster scan.

Reference: "Spatial-Mamba: Effective Visual State Space Models via
Structure-Aware State Fusion", Chaodong Xiao, Minghan Li, Zhengqiang Zhang,
Deyu Meng, Lei Zhang, ICLR 2025 (arXiv:2410.15091); official ``StateFusion``
in https://github.com/EdwardChasel/Spatial-Mamba (``classification/models/spatialmamba.py``).
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from vmamba_zoo_kernels.dispatch import triton_available

from ..layers.param_cache import cached_derived

from .base import ScanPattern, _check_map, _check_routes, register_scan_pattern

__all__ = ["SASFScan", "merge_sasf_kernels"]

#: dilations of the three 3x3 depth-wise kernels (``kernel_3``, ``kernel_3_1``, ``kernel_3_2``)
SASF_DILATIONS = (1, 3, 5)


def merge_sasf_kernels(kernels: Tuple[torch.Tensor, ...], alpha: torch.Tensor,
                       dilations: Tuple[int, ...] = SASF_DILATIONS) -> torch.Tensor:
    """Fold ``sum_i alpha[i] * dwconv3x3(dilation d_i)`` into one dense kernel.

    Args:
        kernels: one (D, 1, 3, 3) depth-wise kernel per dilation.
        alpha: (len(kernels),) mixing weights.
        dilations: the dilation of each kernel.
    Returns:
        (D, 1, S, S) kernel with ``S = 2 * max(dilations) + 1`` (11 for 1/3/5):
        the 3x3 taps of kernel i sit at offsets ``{-d_i, 0, d_i}`` from the
        centre; the centre taps add up.  Differentiable.
    """
    radius = max(dilations)
    size = 2 * radius + 1
    ref = kernels[0]
    merged = ref.new_zeros(ref.shape[0], 1, size, size)
    for i, (k, d) in enumerate(zip(kernels, dilations)):
        pos = torch.tensor([radius - d, radius, radius + d], device=ref.device)
        block = torch.zeros_like(merged)
        block[:, :, pos[:, None], pos[None, :]] = alpha[i] * k
        merged = merged + block
    return merged


@register_scan_pattern("sasf")
class SASFScan(ScanPattern):
    """One row-major raster route whose hidden states are fused spatially (Spatial-Mamba SASF).

    The mixer runs the selective scan with ``return_states=True`` and calls
    :meth:`fuse_states` on the states ``h`` (B, 1, D, N, L) before the output
    contraction, so that::

        h_t = A_t h_{t-1} + B_t u_t                              (raster scan)
        h'  = sum_i alpha_i * dwconv3x3_{dilation d_i}(replicate_pad(h))   d = 1, 3, 5
        y_t = C_t h'_t + D u_t

    ``h`` is folded back onto the H x W grid for the convolutions; each of the
    N state channels of inner channel d uses the same kernel (Spatial-Mamba
    uses N = 1).  Parameters (official names, so checkpoints map one to one):
    ``kernel_3``, ``kernel_3_1``, ``kernel_3_2`` (D, 1, 3, 3), initialised to
    ones, and ``alpha`` (3,), ones.

    In eval mode the three convolutions are folded into one 11 x 11 kernel
    (:func:`merge_sasf_kernels`; replicate padding is index clamping, so one
    pad of 5 gives the same result as pads of 1/3/5).  Set
    ``merge_in_eval = False`` to always run the three convolutions.  Unlike the
    official code, which caches the merged kernel on the first eval call and
    never refreshes it (stale after further training or ``load_state_dict``),
    the cache here is keyed on the parameters' storage and in-place version
    counters and is rebuilt whenever any of them changes.  It is only cached
    while autograd is off; otherwise the merged kernel is rebuilt,
    differentiably, on every call.

    On CUDA with Triton, where no gradient is needed, :meth:`read_out_states`
    runs the fusion, the C contraction and the D skip as one kernel
    (:func:`vmamba_zoo_kernels.state_fusion.sasf_readout_triton`, d_state 1):
    no padded copy, no 11 x 11 convolution (which PyTorch runs in a generic
    depth-wise kernel), output written channels-last.  Set
    ``use_fused_readout = False`` to run the convolutions instead.
    """

    num_routes = 1
    fuses_states = True
    merge_in_eval: bool = True
    use_fused_readout: bool = True

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.kernel_3 = nn.Parameter(torch.ones(dim, 1, 3, 3))
        self.kernel_3_1 = nn.Parameter(torch.ones(dim, 1, 3, 3))
        self.kernel_3_2 = nn.Parameter(torch.ones(dim, 1, 3, 3))
        self.alpha = nn.Parameter(torch.ones(3))

    # ---------------------------------------------------------------- route
    def build_route_indices(self, height: int, width: int) -> torch.Tensor:
        return torch.arange(height * width).unsqueeze(0)

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, 1, D, H*W), row-major."""
        _check_map(x, self.name)
        return x.flatten(2).unsqueeze(1)

    def merge(self, y: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, 1, D, H*W) -> (B, D, H, W)."""
        batch, _, dim, _ = _check_routes(y, self, height, width)
        return y.reshape(batch, dim, height, width)

    # --------------------------------------------------------------- fusion
    def _kernels(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.kernel_3, self.kernel_3_1, self.kernel_3_2

    def _cached(self, kind: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``make()`` of the fusion parameters, reused while they are unchanged and autograd is off
        (:func:`~vmamba_zoo.layers.param_cache.cached_derived`); rebuilt, differentiably, otherwise."""
        return cached_derived(self, ("sasf", kind), (*self._kernels(), self.alpha), make)

    def merged_kernel(self) -> torch.Tensor:
        """The (D, 1, 11, 11) merged kernel; cached (and refreshed on weight changes) when no grad is needed."""
        return self._cached("merged", lambda: merge_sasf_kernels(self._kernels(), self.alpha))

    def readout_taps(self) -> torch.Tensor:
        """(D, 3, 3, 3) float32: ``alpha_i * kernel_i`` for dilation i (the fused read-out's weights)."""
        return self._cached("taps", lambda: torch.stack(
            [self.alpha[i].float() * k[:, 0].float() for i, k in enumerate(self._kernels())], dim=1))

    def fuse_map(self, h: torch.Tensor) -> torch.Tensor:
        """SASF on a (B, D, H, W) map (any batch size), returns the same shape."""
        if h.dim() != 4 or h.shape[1] != self.dim:
            raise ValueError(f"sasf: expected a (B, {self.dim}, H, W) state map, got shape {tuple(h.shape)}")
        dtype = h.dtype
        kernels = [k.to(dtype) for k in self._kernels()]
        if not self.training and self.merge_in_eval:
            r = max(SASF_DILATIONS)
            return F.conv2d(F.pad(h, (r, r, r, r), mode="replicate"), self.merged_kernel().to(dtype), groups=self.dim)
        out = None
        for i, (k, d) in enumerate(zip(kernels, SASF_DILATIONS)):
            term = self.alpha[i].to(dtype) * F.conv2d(F.pad(h, (d, d, d, d), mode="replicate"), k,
                                                      dilation=d, groups=self.dim)
            out = term if out is None else out + term
        return out

    def fuse_states(self, states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, 1, D, N, H*W) -> same shape, every (d, n) state map fused with inner channel d's kernels."""
        if states.dim() != 5 or states.shape[1] != 1 or states.shape[2] != self.dim or states.shape[4] != height * width:
            raise ValueError(f"sasf: expected states (B, 1, {self.dim}, N, {height * width}), got {tuple(states.shape)}")
        batch, _, dim, n, _ = states.shape
        h = states.reshape(batch, dim, n, height, width).transpose(1, 2).reshape(batch * n, dim, height, width)
        h = self.fuse_map(h)
        return h.reshape(batch, n, dim, height * width).transpose(1, 2).reshape(batch, 1, dim, n, height * width)

    def read_out_states(self, states: torch.Tensor, cs: torch.Tensor, xs: torch.Tensor, ds: torch.Tensor,
                        height: int, width: int) -> torch.Tensor:
        """``C . fuse_states(h) + Ds * xs`` (see :meth:`ScanPattern.read_out_states`); one Triton kernel on
        CUDA where no gradient is needed and d_state is 1, the convolutions otherwise."""
        if not self._fused_readout_applies(states, cs, xs, ds):
            return super().read_out_states(states, cs, xs, ds, height, width)
        from vmamba_zoo_kernels.state_fusion import sasf_readout_triton

        batch, _, dim, _, length = states.shape
        ys = sasf_readout_triton(states.reshape(batch, dim, length), cs.reshape(batch, length),
                                 xs.reshape(batch, dim, length), ds, self.readout_taps(), height, width,
                                 SASF_DILATIONS)
        return ys.unsqueeze(1)

    def _fused_readout_applies(self, states: torch.Tensor, cs: torch.Tensor, xs: torch.Tensor,
                               ds: torch.Tensor) -> bool:
        needs_grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (states, cs, xs, ds, *self._kernels(), self.alpha))
        return (self.use_fused_readout and states.is_cuda and not needs_grad and states.dim() == 5
                and states.shape[1] == 1 and states.shape[3] == 1 and states.dtype == torch.float32
                and not torch.compiler.is_compiling() and triton_available())
