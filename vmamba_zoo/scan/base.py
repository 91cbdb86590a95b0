"""Scan-pattern interface and registry for 2-D selective scans.

A *scan pattern* decides in which order the pixels of a feature map are fed to
the 1-D selective scan, along how many routes (directions), and how the K
per-route outputs are folded back into one map.  The mixer
(:class:`vmamba_zoo.layers.SS2D`) is written against this interface only::

    xs = pattern.scan(x)                  # (B, D, H, W) -> (B, K, D, L)
    ys = selective_scan(xs, ...)          # one scan per route, routes batched as groups
    y  = pattern.merge(ys, H, W)          # (B, K, D, L) -> (B, D, H, W)

Adding a pattern is one new file in ``vmamba_zoo/scan/`` that subclasses
:class:`ScanPattern`, decorates it with :func:`register_scan_pattern`, and is
imported from ``vmamba_zoo/scan/__init__.py``.

Gather patterns (``is_gather = True``, the default)
    The scan is a pure re-indexing of the pixels.  A subclass only has to
    implement :meth:`ScanPattern.build_route_indices`, which returns a
    ``LongTensor (K, L)``: entry ``[k, t]`` is the flat (row-major) pixel index
    ``i * W + j`` read at step ``t`` of route ``k``, or ``-1`` for a padding
    step that reads zero.  The default :meth:`scan` gathers with these indices
    and the default :meth:`merge` is its adjoint: every route's outputs are
    scatter-added back onto the pixels they were read from, padding steps are
    dropped.  This covers cross/uni/bi raster scans, atrous sub-grids
    (EfficientVMamba: four stride-2 sub-grids padded to equal length, each pixel
    on exactly one route, so the scatter-add is a plain scatter), windowed,
    snake and Hilbert orders.  A fused kernel can consume
    :meth:`route_indices` directly instead of materialising ``xs``.  Subclasses
    may override :meth:`scan`/:meth:`merge` with faster tensor ops (flip,
    transpose) as long as they agree with the indices; tests check this.

Non-gather patterns (``is_gather = False``)
    Patterns whose scan is not a permutation (e.g. a wavelet transform before a
    raster scan) override :meth:`scan` and :meth:`merge` and may leave
    :meth:`build_route_indices` unimplemented.  The fused SS2D core then runs
    them only if they say how (:meth:`supports_fused_core`): the routes gather
    from a source map of pixel-major rows (:meth:`fused_core_map`, e.g. the
    pixels followed by transform coefficients) through
    :meth:`fused_core_index`, and :meth:`fused_core_merge` folds the summed
    outputs back onto the map; otherwise the unfused path runs.

State fusion (``fuses_states = True``)
    Spatial-Mamba style patterns post-process the hidden states before the
    output contraction.  The mixer then calls the selective scan with
    ``return_states=True`` (no C, no D) and computes::

        h = pattern.fuse_states(h, H, W)        # (B, K, D, N, L) -> same shape
        y[b,k,d,l] = sum_n h[b,k,d,n,l] * C[b,k,n,l] + Ds[k,d] * xs[b,k,d,l]

    (:meth:`read_out_states`, which a pattern may override with a fused
    kernel) before :meth:`merge`.  ``fuse_states`` may own parameters (e.g. dilated
    depth-wise kernels); the pattern is built with the mixer's inner width
    ``dim`` for that purpose.  Its parameters live under the mixer's
    ``scan_pattern.`` prefix.
"""
from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Type, TypeVar

import torch
from torch import nn

from vmamba_zoo_kernels.routes import check_route_map

__all__ = [
    "ScanPattern",
    "register_scan_pattern",
    "create_scan_pattern",
    "get_scan_pattern_cls",
    "list_scan_patterns",
]

_SCAN_PATTERNS: Dict[str, Type["ScanPattern"]] = {}
_T = TypeVar("_T", bound=Type["ScanPattern"])

_MAX_CACHED_MAPS = 16


class _RouteMaps(NamedTuple):
    """One map size's cached route maps."""

    index: torch.Tensor  # (K, L) int64, -1 = padding step
    safe: torch.Tensor  # (K, L) int64, padding steps point at the extra zero slot H*W
    has_pad: bool
    index32: torch.Tensor  # (K, L) int32, as the fused kernel reads it
    covers_all: bool  # every route visits every pixel once (no padding, L = H*W)


class ScanPattern(nn.Module):
    """Base class of scan patterns (see the module docstring for the contract).

    Args:
        dim: channel count D of the maps the pattern scans (the mixer's inner
            width).  Only patterns with parameters use it.

    Class attributes:
        num_routes: K, the number of scan routes (the selective scan's groups).
        is_gather: the scan is a pure gather described by :meth:`route_indices`.
        fuses_states: the mixer must call :meth:`fuse_states` on the hidden
            states before the C contraction.
    """

    name: str = ""
    num_routes: int = 1
    is_gather: bool = True
    fuses_states: bool = False

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"{type(self).__name__}: dim must be positive, got {dim}")
        self.dim = int(dim)
        self._index_cache: Dict[Tuple[int, int, str], _RouteMaps] = {}

    # ------------------------------------------------------------------ maps
    def seq_len(self, height: int, width: int) -> int:
        """Length L of each route for an H x W map (H * W unless the pattern pads)."""
        return height * width

    def build_route_indices(self, height: int, width: int) -> torch.Tensor:
        """Route map (K, L) int64 on CPU: flat pixel index per scan step, -1 = padding.

        Gather patterns must implement this; it is called once per map size
        and cached by :meth:`route_indices`.
        """
        raise NotImplementedError(f"scan pattern {self.name!r} has no route index map (is_gather={self.is_gather})")

    def route_indices(self, height: int, width: int, device: Optional[torch.device] = None,
                      dtype: torch.dtype = torch.int64) -> torch.Tensor:
        """Cached route map (K, L) on ``device``; see :meth:`build_route_indices`.

        ``dtype`` may be ``torch.int64`` (default) or ``torch.int32`` (what the fused kernel reads; cached
        too, so a forward pass launches no conversion).  The map was validated when it was built: every
        entry is -1 or a pixel of the map, and no route visits a pixel twice.
        """
        maps = self._cached_indices(height, width, device)
        if dtype == torch.int64:
            return maps.index
        if dtype == torch.int32:
            return maps.index32
        raise ValueError(f"route_indices: dtype must be torch.int64 or torch.int32, got {dtype}")

    def routes_cover_map(self, height: int, width: int, device: Optional[torch.device] = None) -> bool:
        """Whether every route visits every pixel of an H x W map exactly once (no padding steps)."""
        return self._cached_indices(height, width, device).covers_all

    def _cached_indices(self, height: int, width: int, device) -> "_RouteMaps":
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (int(height), int(width), str(device))
        hit = self._index_cache.get(key)
        if hit is not None:
            return hit
        # built as normal tensors even under inference_mode: a cached inference tensor would later be
        # refused by autograd (gather and the fused kernel save the indices for backward)
        with torch.inference_mode(False):
            return self._build_cached_indices(key, height, width, device)

    def _build_cached_indices(self, key, height: int, width: int, device) -> "_RouteMaps":
        idx = self.build_route_indices(height, width)
        expect = (self.num_routes, self.seq_len(height, width))
        if idx.dtype != torch.long or tuple(idx.shape) != expect:
            raise RuntimeError(
                f"scan pattern {self.name!r} built a route map of {tuple(idx.shape)} {idx.dtype}, "
                f"expected {expect} torch.int64")
        check_route_map(idx, height * width, f"scan pattern {self.name!r}")
        has_pad = bool((idx < 0).any())
        # padding steps read (and write) one extra zero slot at position H*W
        safe = torch.where(idx < 0, torch.full_like(idx, height * width), idx)
        covers_all = not has_pad and idx.shape[1] == height * width  # no pixel twice (checked): a permutation
        entry = _RouteMaps(idx.to(device), safe.to(device), has_pad, idx.to(device=device, dtype=torch.int32),
                           covers_all)
        if len(self._index_cache) >= _MAX_CACHED_MAPS:
            self._index_cache.clear()
        self._index_cache[key] = entry
        return entry

    # ------------------------------------------------------------ scan/merge
    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """Read the map along every route.

        Args:
            x: (B, D, H, W).
        Returns:
            xs: (B, K, D, L), padding steps are zero.
        """
        _check_map(x, self.name)
        batch, dim, height, width = x.shape
        maps = self._cached_indices(height, width, x.device)
        safe, has_pad = maps.safe, maps.has_pad
        flat = x.reshape(batch, dim, height * width)
        if has_pad:
            flat = torch.nn.functional.pad(flat, (0, 1))
        xs = flat[:, :, safe]  # (B, D, K, L)
        return xs.transpose(1, 2).contiguous()

    def merge(self, y: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Fold the route outputs back onto the map (the adjoint of :meth:`scan`).

        Args:
            y: (B, K, D, L).
            height, width: the map size H, W.
        Returns:
            (B, D, H, W): for every pixel, the sum of the outputs of all route
            steps that read it.
        """
        batch, routes, dim, length = _check_routes(y, self, height, width)
        maps = self._cached_indices(height, width, y.device)
        safe, has_pad = maps.safe, maps.has_pad
        src = y.transpose(1, 2).reshape(batch, dim, routes * length)
        out = y.new_zeros(batch, dim, height * width + int(has_pad))
        out = out.index_add(2, safe.reshape(-1), src)
        if has_pad:
            out = out[:, :, : height * width]
        return out.reshape(batch, dim, height, width)

    # -------------------------------------------------------- fused core
    @classmethod
    def supports_fused_core(cls) -> bool:
        """Whether the fused SS2D core (:func:`vmamba_zoo.layers.fused_core.ss2d_core_fused`) runs this
        pattern: its routes read a pixel-major source map (:meth:`fused_core_map`) through
        :meth:`fused_core_index` and their summed outputs fold back with :meth:`fused_core_merge`.
        Gather patterns without state fusion do, with the map itself as the source."""
        return cls.is_gather and not cls.fuses_states

    def fused_core_map(self, x_pm: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The source map the fused core's routes read: (B, H*W, D) pixel-major map -> (B, P_src, D).

        Gather patterns read the map itself; a pattern may append other rows (e.g. transform
        coefficients), which its routes then index past H*W."""
        return x_pm

    def fused_core_index(self, height: int, width: int, device: Optional[torch.device] = None) -> torch.Tensor:
        """(K, L) int32 route map into the rows of :meth:`fused_core_map` (-1 = padding step), cached."""
        return self.route_indices(height, width, device, dtype=torch.int32)

    def fused_core_merge(self, y: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The fused core's output on the source map, (B, D, P_src), folded onto the (B, D, H, W) map."""
        return y.view(y.shape[0], y.shape[1], height, width)

    def fuse_states(self, states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Post-process hidden states (B, K, D, N, L) before the C contraction.

        Only called when ``fuses_states`` is True; returns the same shape.
        """
        raise NotImplementedError(f"scan pattern {self.name!r} does not fuse states")

    def read_out_states(self, states: torch.Tensor, cs: torch.Tensor, xs: torch.Tensor, ds: torch.Tensor,
                        height: int, width: int) -> torch.Tensor:
        """Route outputs from the hidden states: ``C . fuse_states(h) + Ds * xs``.

        Args:
            states: (B, K, D, N, L) hidden states of the scan.
            cs: (B, K, N, L) the scan's C.
            xs: (B, K, D, L) the scan's input.
            ds: (K*D,) skip weights.
            height, width: the map size H, W.
        Returns:
            (B, K, D, L) in the states' dtype.
        """
        batch, routes, dim = xs.shape[:3]
        h = self.fuse_states(states, height, width)
        ys = torch.einsum("bkdnl,bknl->bkdl", h, cs.to(h.dtype))
        return ys + ds.to(ys.dtype).reshape(1, routes, dim, 1) * xs.to(ys.dtype)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, routes={self.num_routes}, dim={self.dim}"


def _check_map(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"scan pattern {name!r}: expected a (B, D, H, W) map, got shape {tuple(x.shape)}")


def _check_routes(y: torch.Tensor, pattern: ScanPattern, height: int, width: int) -> Tuple[int, int, int, int]:
    expect_len = pattern.seq_len(height, width)
    if y.dim() != 4 or y.shape[1] != pattern.num_routes or y.shape[3] != expect_len:
        raise ValueError(
            f"scan pattern {pattern.name!r}: expected route outputs (B, K={pattern.num_routes}, D, "
            f"L={expect_len}) for a {height}x{width} map, got shape {tuple(y.shape)}")
    return tuple(y.shape)  # type: ignore[return-value]


# ------------------------------------------------------------------ registry
def register_scan_pattern(name: str) -> Callable[[_T], _T]:
    """Class decorator: register a :class:`ScanPattern` subclass under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"scan pattern name must be a non-empty string, got {name!r}")

    def deco(cls: _T) -> _T:
        if not (isinstance(cls, type) and issubclass(cls, ScanPattern)):
            raise TypeError(f"register_scan_pattern({name!r}) decorates ScanPattern subclasses, got {cls!r}")
        if name in _SCAN_PATTERNS and _SCAN_PATTERNS[name] is not cls:
            raise ValueError(f"scan pattern {name!r} is already registered by {_SCAN_PATTERNS[name].__qualname__}")
        cls.name = name
        _SCAN_PATTERNS[name] = cls
        return cls

    return deco


def get_scan_pattern_cls(name: str) -> Type[ScanPattern]:
    """The registered :class:`ScanPattern` subclass called ``name``."""
    try:
        return _SCAN_PATTERNS[name]
    except KeyError:
        raise ValueError(f"unknown scan pattern {name!r}; registered: {list_scan_patterns()}") from None


def create_scan_pattern(name: str, dim: int, **kwargs) -> ScanPattern:
    """Instantiate the scan pattern ``name`` for maps with ``dim`` channels."""
    return get_scan_pattern_cls(name)(dim, **kwargs)


def list_scan_patterns() -> List[str]:
    """Names of all registered scan patterns, sorted."""
    return sorted(_SCAN_PATTERNS)
