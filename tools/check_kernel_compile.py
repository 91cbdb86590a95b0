#!/usr/bin/env python
"""Compile every Triton kernel of the zoo for a CUDA target, on a machine without a GPU.

Triton's interpreter (``TRITON_INTERPRET=1``), which the CPU test-suite uses, checks what the kernels
compute but not that they compile: a type error in a branch, a shape the compiler rejects or a
construct a Triton version lacks only shows on a GPU.  This runs the kernels' Python wrappers on small
CPU tensors with launches intercepted (``JITFunction.__getitem__``), turns each intercepted launch into
the signature and constants Triton would have specialised for, and compiles it ahead of time for the
target (``triton.compile``: Triton's frontend, its MLIR passes, LLVM and ptxas).  Nothing runs.

    python tools/check_kernel_compile.py            # sm_90 (H100 / H200)
    python tools/check_kernel_compile.py --arch 80  # sm_80 (A100)

Must run without ``TRITON_INTERPRET=1`` (then the kernels are compilable ``JITFunction`` objects).
Exit status 1 if any kernel fails to compile, with the compiler's message.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

import torch

_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int32: "i32",
           torch.int64: "i64", torch.int8: "i8", torch.uint8: "u8", torch.bool: "i1"}


def _arg_type(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + _DTYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2 ** 31 <= value < 2 ** 31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton type for a runtime argument of type {type(value).__name__}")


class _Launches:
    """Intercepts ``kernel[grid](...)`` of every Triton JIT function: records (kernel, bound arguments,
    launch options) instead of launching."""

    def __init__(self) -> None:
        self.records: List[Tuple[Any, Dict[str, Any], Dict[str, Any]]] = []

    def __enter__(self) -> "_Launches":
        from triton.runtime.jit import JITFunction

        self._cls, self._orig = JITFunction, JITFunction.__getitem__
        records = self.records

        def intercept(kernel, grid):
            def launch(*args, **kwargs):
                options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
                bound = inspect.signature(kernel.fn).bind(*args, **kwargs)
                bound.apply_defaults()
                records.append((kernel, dict(bound.arguments), options))
            return launch

        JITFunction.__getitem__ = intercept
        return self

    def __exit__(self, *exc) -> None:
        self._cls.__getitem__ = self._orig


def _compile(kernel, arguments: Dict[str, Any], options: Dict[str, Any], arch: int) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constexprs = {}, {}
    for index, param in enumerate(kernel.params):
        value = arguments[param.name]
        if param.is_constexpr:
            signature[param.name] = "constexpr"
            constexprs[(index,)] = value
        else:
            signature[param.name] = _arg_type(value)
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def _scan_cases() -> List[Tuple[str, Callable[[], None]]]:
    from vmamba_zoo_kernels.triton_scan import scan_bwd, scan_fwd

    def inputs(n_state: int, pixel_major: bool, dtype=torch.bfloat16):
        batch, dim, groups, length = 2, 32, 4, 50
        if pixel_major:
            u = torch.zeros(batch, length, dim, dtype=dtype).transpose(1, 2)
        else:
            u = torch.zeros(batch, dim, length, dtype=dtype)
        bc = torch.zeros(batch, groups, n_state, length, dtype=dtype)
        return dict(u=u, delta=torch.zeros_like(u), A=torch.zeros(dim, n_state), B=bc, C=bc.clone(),
                    D=torch.zeros(dim), z=None, delta_bias=torch.zeros(dim), initial_state=None)

    def fwd(n_state, pixel_major, return_states=False, z=False, reverse=False):
        def run():
            x = inputs(n_state, pixel_major)
            if z:
                x["z"] = torch.zeros_like(x["u"])
            scan_fwd(**x, delta_softplus=True, reverse=reverse, return_states=return_states,
                     out_dtype=torch.float32)
        return run

    def routes(n_state, a_is_log=False):
        def run():  # the fused core: a shared pixel-major map, a route index of 4 routes (A as A_logs: the VSS block)
            batch, per_route, pixels = 2, 8, 50
            u = torch.zeros(batch, pixels, per_route, dtype=torch.bfloat16).transpose(1, 2)
            delta = torch.zeros(batch, pixels, 4 * per_route, dtype=torch.bfloat16).transpose(1, 2)
            bc = torch.zeros(batch, 4, n_state, pixels, dtype=torch.bfloat16)
            index = torch.zeros(4, pixels, dtype=torch.int32)
            args = (u, delta, torch.zeros(4 * per_route, n_state), bc, bc.clone(), torch.zeros(4 * per_route), None,
                    torch.zeros(4 * per_route), None)
            _, states = scan_fwd(*args, True, False, False, torch.float32, route_index=index, a_is_log=a_is_log)
            scan_bwd(*args, states, torch.zeros(batch, per_route, pixels).transpose(1, 2).contiguous(), None, True,
                     False, False, False, route_index=index, a_is_log=a_is_log)
        return run

    def bwd(n_state, return_states=False, deterministic=False):
        def run():
            x = inputs(n_state, False)
            x["z"] = None if return_states else torch.zeros_like(x["u"])
            out, states = scan_fwd(**x, delta_softplus=True, reverse=False, return_states=return_states,
                                   out_dtype=torch.float32)
            scan_bwd(**x, chunk_states=states, dout=torch.zeros(out.shape), dlast=None, delta_softplus=True,
                     reverse=False, return_states=return_states, deterministic=deterministic)
        return run

    return [
        ("scan forward, chunked, channel-first, N=1, gate", fwd(1, False, z=True)),
        ("scan forward, chunked, pixel-major, N=1, reverse", fwd(1, True, reverse=True)),
        ("scan forward, states (SASF)", fwd(1, False, return_states=True)),
        ("scan forward, step by step, N=16", fwd(16, True)),
        ("scan backward, N=1 and N=16, deterministic", lambda: (bwd(1)(), bwd(16, deterministic=True)())),
        ("scan backward, states", bwd(1, return_states=True)),
        ("fused routes forward + backward, N=1 and N=16", lambda: (routes(1)(), routes(16)())),
        ("fused routes with A_logs (VSS block), N=1 and N=16",
         lambda: (routes(1, a_is_log=True)(), routes(16, a_is_log=True)())),
    ]


def _other_cases() -> List[Tuple[str, Callable[[], None]]]:
    from vmamba_zoo_kernels.dwconv import dwconv3x3_channels_last_triton
    from vmamba_zoo_kernels.layer_norm import _ln_bwd, _ln_fwd, layer_norm_silu_gate_triton
    from vmamba_zoo_kernels.state_fusion import sasf_readout_triton
    from vmamba_zoo_kernels.wavelet_windows import haar_merge_triton, haar_source_map_triton

    def dwconv():
        x = torch.zeros(2, 5, 6, 8, dtype=torch.bfloat16).permute(0, 3, 1, 2)
        for silu, residual in ((True, False), (False, True)):
            dwconv3x3_channels_last_triton(x, torch.zeros(8, 1, 3, 3), torch.zeros(8), silu=silu, residual=residual)

    def layer_norm():
        x = torch.zeros(4, 5, 96, dtype=torch.bfloat16)
        y, mean, rstd = _ln_fwd(x, torch.zeros(96), torch.zeros(96), 1e-5, torch.bfloat16)
        _ln_bwd(torch.zeros_like(y), x, torch.zeros(96), mean, rstd)
        z = torch.zeros(4, 5, 192, dtype=torch.bfloat16)[..., 96:]
        layer_norm_silu_gate_triton(torch.zeros(4, 5, 96), torch.zeros(96), torch.zeros(96), 1e-5, z,
                                    out_dtype=torch.bfloat16)

    def sasf():
        h = torch.zeros(2, 30, 16).transpose(1, 2)
        u = torch.zeros(2, 30, 16, dtype=torch.bfloat16).transpose(1, 2)
        sasf_readout_triton(h, torch.zeros(2, 30, dtype=torch.bfloat16), u, torch.zeros(16),
                            torch.zeros(16, 3, 3, 3), 5, 6, (1, 3, 5))

    def wavelet():
        kernel = torch.zeros(16, 16)
        src = haar_source_map_triton(torch.zeros(2, 7 * 6, 8, dtype=torch.bfloat16), kernel, 7, 6)
        haar_merge_triton(torch.zeros(src.shape), kernel, 7, 6)

    return [("depth-wise 3x3 conv (SiLU, residual)", dwconv), ("LayerNorm forward, backward, gated", layer_norm),
            ("SASF read-out", sasf), ("Haar window source map and merge", wavelet)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 (H100), 80 (A100)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")
    failures = 0
    seen = set()  # (kernel, specialisation): each compiled once
    for what, run in _scan_cases() + _other_cases():
        with _Launches() as launches:
            run()
        for kernel, arguments, options in launches.records:
            key = (kernel.fn.__name__, tuple(repr(arguments[p.name]) if p.is_constexpr else _arg_type(arguments[p.name])
                                             for p in kernel.params))
            if key in seen:
                continue
            seen.add(key)
            start = time.perf_counter()
            try:
                _compile(kernel, arguments, options, args.arch)
            except Exception as exc:  # report every kernel, then fail
                failures += 1
                print(f"FAILED  {what}: {kernel.fn.__name__}: {type(exc).__name__}: {exc}")
                continue
            print(f"ok      {what}: {kernel.fn.__name__} ({time.perf_counter() - start:.1f} s)")
    print(f"{failures} kernel(s) failed to compile for sm_{args.arch}" if failures else f"all compiled for sm_{args.arch}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
