"""Launching a Triton kernel with less host work than ``kernel[grid](...)``.

``kernel[grid](...)`` works out on every call which compiled variant the
arguments select: it binds them to the signature, derives each argument's
specialisation (pointer dtype and 16-byte alignment, integer divisibility by
16 or value 1), formats a cache key from that and looks the variant up.  On an
H100 host that is about 42 us for the 45 arguments of the scan backward, of
which the launch proper (the compiled kernel's launcher) is about 11 us; a bf16
training step of VMamba-T launches some 130 Triton kernels, and it is the host
that bounds that step's speed.

:class:`CachedLauncher` keys the compiled variant on a finer and cheaper
description of the call: each pointer argument's dtype and alignment, and the
exact values and types of all other arguments (Triton specialises on them
through their values and types only).  A call with a new key goes through Triton's own launch, which
compiles if needed and returns the compiled kernel; later calls with that key
launch it through ``CompiledKernel[grid]`` (the launch Triton's own path ends
in, with the same launch hooks).  Under Triton's interpreter
(``TRITON_INTERPRET=1``), or where a launch does not return a compiled kernel,
every call goes through ``kernel[grid]``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["CachedLauncher"]

#: compiled variants remembered per kernel; past that (many distinct shapes) the memory starts over
MAX_ENTRIES = 256


def _is_compiled_jit(fn: Any) -> bool:
    """Whether ``fn`` is a compiling ``@triton.jit`` kernel (not the interpreter's stand-in)."""
    from triton.runtime.jit import JITFunction

    return isinstance(fn, JITFunction)


def _current_stream() -> Tuple[int, Any]:
    """(current device index, its current stream handle), as Triton's launch takes them."""
    from triton.runtime import driver

    device = driver.active.get_current_device()
    return device, driver.active.get_current_stream(device)


class CachedLauncher:
    """``launcher[grid](*args, **kwargs)`` runs ``fn[grid](*args, **kwargs)`` for a ``@triton.jit`` kernel ``fn``,
    reusing the compiled kernel of an earlier call with the same key (see the module docstring).

    Positional arguments must start with the pointer (tensor) arguments and hold no tensor after them;
    keyword arguments are the kernel's remaining parameters (by name, e.g. constexprs) and launch options
    (``num_warps``, ...).

    Args:
        fn: the kernel (its ``arg_names`` name its parameters).
        fast: reuse compiled kernels (default: decided at the first launch, when ``fn`` compiles (not under
            the interpreter) and a GPU is there (not so in ``tools/check_kernel_compile.py``, which compiles
            without one)).  Tests pass stand-ins with ``fast=True``.
        current_stream: returns (device, stream) for a launch (default: Triton's driver's current ones).
    """

    def __init__(self, fn: Any, fast: Optional[bool] = None,
                 current_stream: Callable[[], Tuple[Any, Any]] = _current_stream) -> None:
        self.fn = fn
        self.fast = fast
        self._current_stream = current_stream
        self._compiled: Dict[tuple, Any] = {}
        self._n_pointers: Optional[int] = None
        # keyword names of a call -> (the kernel parameters among them in signature order, the launch options)
        self._keyword_split: Dict[Tuple[str, ...], Tuple[List[str], Tuple[str, ...]]] = {}

    def __getitem__(self, grid: Tuple[int, ...]) -> Callable[..., None]:
        return functools.partial(self._launch, grid)

    def _name(self) -> str:
        return getattr(self.fn, "__name__", None) or repr(self.fn)

    def _pointer_count(self, args: Sequence[Any]) -> int:
        """Number of leading tensor arguments, checked to be the only tensors of ``args``."""
        count = 0
        while count < len(args) and isinstance(args[count], torch.Tensor):
            count += 1
        if any(isinstance(a, torch.Tensor) for a in args[count:]):
            raise ValueError(f"CachedLauncher({self._name()}): pointer (tensor) arguments must come first; "
                             f"a tensor follows a non-tensor argument")
        if self._n_pointers is not None and count != self._n_pointers:
            raise ValueError(f"CachedLauncher({self._name()}): expected {self._n_pointers} leading tensor "
                             f"arguments (as on the first call), got {count}")
        return count

    def _split_keywords(self, names: Tuple[str, ...]) -> Tuple[List[str], Tuple[str, ...]]:
        split = self._keyword_split.get(names)
        if split is None:
            params = set(self.fn.arg_names)
            split = ([n for n in self.fn.arg_names if n in names], tuple(n for n in names if n not in params))
            self._keyword_split[names] = split
        return split

    def _launch(self, grid: Tuple[int, ...], *args: Any, **kwargs: Any) -> None:
        if self.fast is None:
            self.fast = _is_compiled_jit(self.fn) and torch.cuda.is_available()
        if not self.fast:
            self.fn[grid](*args, **kwargs)
            return
        n_pointers = self._n_pointers
        if n_pointers is None:
            n_pointers = self._n_pointers = self._pointer_count(args)
        param_names, option_names = self._split_keywords(tuple(kwargs))
        args = args + tuple([kwargs[n] for n in param_names])  # every parameter, in signature order
        device, stream = self._current_stream()
        # what Triton's choice of variant depends on: pointer dtypes and 16-byte alignment, the values and types
        # of the other parameters (scalars and constexprs; 1, 1.0 and True are equal keys but not equal to
        # Triton), the launch options and the device
        try:
            pointers = tuple([(t.dtype, t.data_ptr() % 16 == 0) for t in args[:n_pointers]])
        except AttributeError:  # not a tensor where the first call had one
            self._pointer_count(args)
            raise
        scalars = args[n_pointers:]
        key = (device, pointers, scalars, tuple(map(type, scalars)), tuple([kwargs[n] for n in option_names]),
               option_names)
        compiled = self._compiled.get(key)
        if compiled is not None:
            if len(grid) != 3:  # the compiled kernel's launch takes all three grid dimensions
                grid = (tuple(grid) + (1, 1))[:3]
            compiled[grid](*args, stream=stream)
            return
        # a new key: check the arguments' layout (a misplaced tensor lands here)
        self._pointer_count(args)
        if param_names and list(self.fn.arg_names[len(args) - len(param_names):]) != param_names:
            raise ValueError(f"CachedLauncher({self._name()}): the positional arguments and the keyword parameters "
                             f"{param_names} must give the kernel's parameters {self.fn.arg_names} in order")
        compiled = self.fn[grid](*args, **{n: kwargs[n] for n in option_names})
        if compiled is None or not hasattr(compiled, "__getitem__"):
            return  # e.g. an intercepted launch (tools/check_kernel_compile.py): nothing to remember
        if hasattr(compiled, "result"):  # a compile future (asynchronous compilation)
            compiled = compiled.result()
        if len(self._compiled) >= MAX_ENTRIES:
            self._compiled.clear()
        self._compiled[key] = compiled
