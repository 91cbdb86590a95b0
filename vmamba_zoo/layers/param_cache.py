"""Reuse tensors derived from parameters (dtype casts, block-diagonal stacks) across inference calls.

Each forward under bf16 autocast would otherwise re-cast the same fp32
parameters and re-build the same derived weights: a handful of tiny kernels
per block whose cost is host time (tens of microseconds each), which decides
the speed of a model whose late stages are host-bound.  While autograd is off
(``torch.no_grad`` / ``torch.inference_mode``) the result is kept per module
and key and reused until one of its parameters changes: an in-place update
(optimizer step, ``load_state_dict``) bumps the parameter's version, a move or
cast gives it new storage or dtype.  With autograd on it is always recomputed,
so gradients flow as usual.
"""
from __future__ import annotations

import weakref
from typing import Callable, Dict, Hashable, Optional, Sequence, Tuple, TypeVar

import torch
from torch import nn

__all__ = ["cached_derived", "cached_cast", "autocast_dtype", "autocast_inference_params"]

_T = TypeVar("_T")
_CACHES: "weakref.WeakKeyDictionary[nn.Module, Dict[Hashable, Tuple[tuple, object]]]" = weakref.WeakKeyDictionary()


def _stamp(params: Sequence[torch.Tensor]) -> tuple:
    return tuple((p._version, p.data_ptr(), p.dtype, p.device, tuple(p.shape)) for p in params)


def cached_derived(module: nn.Module, key: Hashable, params: Sequence[torch.Tensor], make: Callable[[], _T]) -> _T:
    """``make()``, cached on ``module`` under ``key`` while autograd is off and ``params`` are unchanged."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return make()
    cache = _CACHES.setdefault(module, {})
    stamp = _stamp(params)
    hit = cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    value = make()
    cache[key] = (stamp, value)
    return value


def cached_cast(module: nn.Module, tensors: Sequence[Optional[torch.Tensor]], dtype: torch.dtype,
                cache: bool = True, tag: str = "") -> Tuple[Optional[torch.Tensor], ...]:
    """``tensors`` (parameters of ``module``, None entries kept) cast to ``dtype``, through
    :func:`cached_derived` (one cache entry per module, dtype and ``tag``: callers that cast different
    sets of one module's parameters use different tags) unless ``cache`` is False."""
    def make() -> Tuple[Optional[torch.Tensor], ...]:
        return tuple(t.to(dtype) if t is not None else None for t in tensors)

    if not cache:
        return make()
    return cached_derived(module, ("cast", dtype, tag), [t for t in tensors if t is not None], make)


def autocast_inference_params(module: nn.Module, tensors: Sequence[Optional[torch.Tensor]],
                              device_type: str) -> Tuple[Optional[torch.Tensor], ...]:
    """``tensors`` (parameters of ``module``) as an op under autocast would use them.

    Under autocast on ``device_type`` with autograd off: cast to autocast's dtype once and reused
    (:func:`cached_cast`, cached on ``module``), so autocast finds them in its dtype and launches no
    cast of its own at every call (about 16 casts per block of a Spatial-Mamba forward).  Otherwise
    (autograd on, no autocast) returned as they are, and autocast casts them as usual.
    """
    dtype = None if torch.is_grad_enabled() else autocast_dtype(device_type)
    if dtype is None:
        return tuple(tensors)
    return cached_cast(module, tensors, dtype)


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast casts to on ``device_type``, or None when autocast is off there (or the device
    type has no autocast, e.g. "meta", where asking would raise)."""
    if not torch.amp.is_autocast_available(device_type) or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)
