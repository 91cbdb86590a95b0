"""Native CPU selective scan: a small C kernel (``csrc/scan_cpu.c``) compiled at first use.

The chunked PyTorch scan (:mod:`.cpu`) makes about thirty passes over every (batch, dim, L) tensor;
this kernel makes one, and for the multi-route SS2D core it reads the routes straight from the
pixel-major map and merges in place (no route copies), as the Triton kernel does on GPUs.

The source is plain C99 with no Python or torch headers: it compiles in about a second with the
system's C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``), as Triton compiles its launcher,
and is cached under ``$VMAMBA_ZOO_CACHE_DIR`` (default ``~/.cache/vmamba-zoo``)/native, keyed by
the source, the compiler, the flags and the CPU.  Calls go through ``ctypes`` (which releases the
GIL); with OpenMP the work runs on ``torch.get_num_threads()`` threads of torch's own OpenMP pool.

It is forward only, float32: it runs where autograd does not need the graph (inference, or no
input requiring grad), outside tracing and ``torch.compile``.  Everywhere else, and when no
compiler is found or the build fails (logged once as a warning), the chunked path runs.  Set
``VMAMBA_ZOO_NATIVE_CPU=0`` to turn the kernel off.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch

__all__ = ["native_library", "native_usable", "scan_rows_native", "scan_routes_native", "dwconv3x3_native",
           "native_cache_dir"]

_log = logging.getLogger(__name__)
_SOURCE = Path(__file__).with_name("csrc") / "scan_cpu.c"
_ABI_VERSION = 9
_BASE_FLAGS = ("-O3", "-std=gnu99", "-fPIC", "-shared", "-fno-math-errno", "-fvisibility=hidden")

_i64, _f32p, _i32p, _int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int


def native_cache_dir() -> Path:
    """Where compiled kernels are kept: ``$VMAMBA_ZOO_CACHE_DIR/native``, default ``~/.cache/vmamba-zoo/native``."""
    root = os.environ.get("VMAMBA_ZOO_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "vmamba-zoo")
    return Path(root) / "native"


def _cpu_identity() -> str:
    """The CPU model and feature flags (a kernel built with -march=native runs only on such a CPU)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() + platform.processor()
    wanted = [line for line in text.splitlines() if line.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(dict.fromkeys(wanted))  # first occurrence of each (all cores alike)


def _find_compiler() -> Optional[str]:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _build(compiler: str, flags: Sequence[str], target: Path) -> Optional[str]:
    """Compile the source into ``target`` (atomically); returns None, or the compiler's error output."""
    try:  # an unwritable cache folder is a build failure like any other (the chunked path then runs)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        return f"cannot write the kernel cache {target.parent} (set VMAMBA_ZOO_CACHE_DIR): {exc}"
    try:
        proc = subprocess.run([compiler, *flags, str(_SOURCE), "-o", tmp], capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            return (proc.stderr or proc.stdout).strip()[-2000:]
        os.replace(tmp, target)  # another process building the same key at once ends with the same file
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.vz_abi_version.restype = _int
    lib.vz_abi_version.argtypes = []
    lib.vz_openmp.restype = _int
    lib.vz_openmp.argtypes = []
    lib.vz_scan_rows.restype = _int
    lib.vz_scan_rows.argtypes = [_i64] * 5 + [_f32p] * 8 + [_int, _int, _f32p, _f32p, _f32p, _f32p, _int]
    lib.vz_scan_routes.restype = _int
    lib.vz_scan_routes.argtypes = (
        [_i64] * 5 + [_f32p, _i64, _i64] + [_f32p, _i64, _i64, _i64] + [_f32p]
        + [_f32p, _i64, _i64, _i64, _i64] * 2 + [_f32p, _f32p, _int, _i32p]
        + [_f32p, _i64, _i64, _i64, _f32p, _i64, _i64, _int])
    lib.vz_dwconv3x3.restype = _int
    lib.vz_dwconv3x3.argtypes = [_i64] * 4 + [_f32p, _i64, _i64, _i64, _f32p, _f32p, _int, _f32p, _i64, _i64, _i64,
                                             _int]
    return lib


def native_library() -> Optional[ctypes.CDLL]:
    """The compiled kernel library, building it on first use; None when turned off
    (``VMAMBA_ZOO_NATIVE_CPU=0``, read at every call) or unavailable (the reason is logged once)."""
    if os.environ.get("VMAMBA_ZOO_NATIVE_CPU", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    return _load_library()


@functools.lru_cache(maxsize=None)
def _load_library() -> Optional[ctypes.CDLL]:
    compiler = _find_compiler()
    if compiler is None:
        _log.warning("no C compiler found (set $CC or install cc/gcc/clang): the CPU selective scan uses the "
                     "slower chunked PyTorch path")
        return None
    identity = b"\0".join([_SOURCE.read_bytes(), compiler.encode(), _compiler_version(compiler).encode(),
                            _cpu_identity().encode()])
    errors: List[str] = []
    # OpenMP (torch's libgomp, see csrc/scan_cpu.c) and -march=native where the compiler has them
    for extra in (("-fopenmp", "-march=native"), ("-march=native",), ()):
        flags = _BASE_FLAGS + extra
        key = hashlib.sha256(identity + b"\0" + " ".join(flags).encode()).hexdigest()[:24]
        target = native_cache_dir() / f"scan_cpu_{key}.so"
        if not target.exists():
            error = _build(compiler, flags, target)
            if error is not None:
                errors.append(f"{' '.join(flags)}: {error}")
                continue
        try:
            lib = _declare(ctypes.CDLL(str(target)))
        except OSError as exc:
            errors.append(f"loading {target}: {exc}")
            continue
        if lib.vz_abi_version() != _ABI_VERSION:
            errors.append(f"{target} has ABI {lib.vz_abi_version()}, expected {_ABI_VERSION}")
            continue
        return lib
    _log.warning("the native CPU selective scan could not be built with %s; using the chunked PyTorch path:\n%s",
                 compiler, "\n".join(errors))
    return None


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export() or \
        torch.compiler.is_compiling()


def native_usable(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether the native kernel can run on these inputs: all on the CPU, 16/32-bit floats, none that
    autograd must differentiate, not tracing or compiling, and the library available."""
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is None:
            continue
        if t.device.type != "cpu" or t.dtype == torch.float64 or (grad and t.requires_grad):
            return False  # (float64 keeps the chunked path's double precision)
    return not _tracing() and native_library() is not None


def _check_code(code: int) -> None:
    if code & 2:
        raise ValueError("route_index has entries outside [-1, P) (P = the map's pixels); -1 marks a padding step")
    if code:
        raise MemoryError("the native CPU selective scan could not allocate its work buffers")


def _split(total: int, parts: int, align: int = 1) -> List[Tuple[int, int]]:
    """[0, total) in up to ``parts`` contiguous ranges, boundaries on multiples of ``align``."""
    units = -(-total // align)
    parts = max(1, min(parts, units))
    bounds = [min(total, align * (units * i // parts)) for i in range(parts + 1)]
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def _ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def _as_f32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 (no op when it is already; only data pointers are read, so no detach)."""
    return t if t.dtype == torch.float32 else t.to(torch.float32)


def _f32(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``t`` in float32, contiguous (no op when it is already)."""
    if t is None:
        return None
    t = _as_f32(t)
    return t if t.is_contiguous() else t.contiguous()


def scan_rows_native(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None, delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False, return_last_state: bool = False, *, out_dtype: Optional[torch.dtype] = None,
    initial_state: Optional[torch.Tensor] = None, reverse: bool = False, return_states: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """``selective_scan`` (inputs checked by the caller; B, C as (batch, G, N, L)) on the native kernel.

    Returns out (batch, dim, L) -- or with ``return_states`` the states h (batch, dim, N, L) -- in
    ``out_dtype`` (default ``u.dtype``) and, with ``return_last_state``, the final state (batch, dim, N)
    float32."""
    lib = native_library()
    if lib is None:
        raise RuntimeError("the native CPU selective scan is unavailable (see the warning logged when it was built)")
    batch, dim, length = u.shape
    n_state, groups = A.shape[1], B.shape[1]
    u32, dt32, A32, B32, C32 = (_f32(t) for t in (u, delta, A, B, C))
    D32, z32, bias32, h0 = (_f32(t) for t in (D, z, delta_bias, initial_state))
    if return_states:
        out, states = None, torch.empty(batch, dim, n_state, length, dtype=torch.float32)
    else:
        out, states = torch.empty(batch, dim, length, dtype=torch.float32), None
    last = torch.empty(batch, dim, n_state, dtype=torch.float32) if return_last_state else None
    ptrs = [_ptr(t) for t in (u32, dt32, A32, B32, C32, D32, z32, bias32)]
    code = lib.vz_scan_rows(batch, dim, length, n_state, groups, *ptrs, int(delta_softplus), int(reverse), _ptr(h0),
                            _ptr(out), _ptr(states), _ptr(last), torch.get_num_threads())
    _check_code(code)
    out = (states if return_states else out).to(out_dtype or u.dtype)
    return (out, last) if return_last_state else out


def scan_routes_native(
    x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor], delta_softplus: bool, route_index: torch.Tensor,
    dt_weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``selective_scan_routes`` (inputs and route map checked by the caller) on the native kernel.

    Args:
        x: (batch, D, P); A: (K*D, N); B, C: (batch, K, N, P); D, delta_bias: (K*D,); route_index: (K, L).
        delta: without ``dt_weight``, Δ before bias and softplus, (batch, K*D, P).  With ``dt_weight``
            (K, D, R), the R-wide dt features of every route, (batch, P, K*R) or (batch, P, K, R) (e.g. a
            slice of the x_proj output, any strides), projected here with one batched GEMM (K per-route
            (D, R) products instead of the block-diagonal (K*D, K*R) one).
        Fastest when x and Δ are pixel-major (stride 1 along the channels), as the fused SS2D core passes
        them; B, C and the dt features may have any strides.
    Returns:
        y: (batch, D, P) float32 with pixel-major strides.
    """
    lib = native_library()
    if lib is None:
        raise RuntimeError("the native CPU selective scan is unavailable (see the warning logged when it was built)")
    batch, dim, pixels = x.shape
    routes, length = route_index.shape
    n_state = A.shape[1]

    def pixel_major(t: torch.Tensor) -> torch.Tensor:  # (batch, C, P) with channel stride 1
        t = _as_f32(t)
        return t if t.stride(1) == 1 and t.stride(2) >= t.shape[1] else t.transpose(1, 2).contiguous().transpose(1, 2)

    x32 = pixel_major(x)
    if dt_weight is None:
        dt32 = pixel_major(delta)  # (batch, K*D, P): route k's channel d at row k*D + d
        dt_strides = (dt32.stride(0), dt32.stride(2), dim)
    else:  # Δ of each route = its dt features @ its (D, R) weight: one batched GEMM, (K, batch*P, D)
        rank = dt_weight.shape[2]
        feats = _as_f32(delta).reshape(batch, pixels, routes, rank)
        feats = feats.permute(2, 0, 1, 3).reshape(routes, batch * pixels, rank)
        with torch.autocast("cpu", enabled=False):  # fp32 for the C kernel, also under CPU autocast (bf16)
            dt32 = torch.bmm(feats, _as_f32(dt_weight).transpose(1, 2))
        dt_strides = (pixels * dim, dim, batch * pixels * dim)
    B32, C32 = _as_f32(B), _as_f32(C)
    A_knd = _f32(_as_f32(A).view(routes, dim, n_state).transpose(1, 2))  # (K, N, D)
    D32, bias32 = _f32(D), _f32(delta_bias)
    index = route_index if route_index.dtype == torch.int32 and route_index.device.type == "cpu" else \
        route_index.to(device="cpu", dtype=torch.int32)
    index = index if index.is_contiguous() else index.contiguous()
    threads = torch.get_num_threads()
    # (y part, batches, channels, routes) per thread: whole batches; else disjoint routes, each thread
    # writing its own part of y (summed into part 0 in C); else channel blocks of whole cache lines
    if batch >= threads or threads == 1:
        slices = [(0, b0, b1, 0, dim, 0, routes) for b0, b1 in _split(batch, threads)]
    elif routes >= 2:
        slices = [(i, 0, batch, 0, dim, k0, k1) for i, (k0, k1) in enumerate(_split(routes, threads))]
    else:
        slices = [(0, 0, batch, d0, d1, 0, routes) for d0, d1 in _split(dim, threads, align=16)]
    parts = torch.empty(max(s[0] for s in slices) + 1, batch, pixels, dim, dtype=torch.float32)  # set in C
    table = torch.tensor(slices, dtype=torch.int64)
    code = lib.vz_scan_routes(
        batch, dim, pixels, length, n_state,
        x32.data_ptr(), x32.stride(0), x32.stride(2),
        dt32.data_ptr(), *dt_strides,
        A_knd.data_ptr(),
        B32.data_ptr(), B32.stride(0), B32.stride(3), B32.stride(1), B32.stride(2),
        C32.data_ptr(), C32.stride(0), C32.stride(3), C32.stride(1), C32.stride(2),
        _ptr(D32), _ptr(bias32), int(delta_softplus), index.data_ptr(),
        parts.data_ptr(), parts.stride(1), parts.stride(2), parts.stride(0), table.data_ptr(), len(slices),
        parts.shape[0], threads)
    _check_code(code)
    return parts[0].transpose(1, 2)  # the parts were summed into part 0


def dwconv3x3_native(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                     silu: bool = False) -> torch.Tensor:
    """Depth-wise 3x3 convolution (zero padding 1, stride 1), optionally followed by SiLU, on the native
    kernel: ``F.conv2d(x, weight, bias, padding=1, groups=C)`` (then ``F.silu``) for inference.

    Args:
        x: (B, C, H, W), fastest channels-last (a permuted (B, H, W, C) tensor: no copy).
        weight: (C, 1, 3, 3); bias: (C,) or None.
    Returns:
        (B, C, H, W) float32 in channels-last memory.
    """
    lib = native_library()
    if lib is None:
        raise RuntimeError("the native CPU kernels are unavailable (see the warning logged when they were built)")
    batch, channels, height, width = x.shape
    if tuple(weight.shape) != (channels, 1, 3, 3):
        raise ValueError(f"weight must be (C, 1, 3, 3) = ({channels}, 1, 3, 3), got {tuple(weight.shape)}")
    x32 = _as_f32(x)
    if x32.stride(1) != 1:
        x32 = x32.contiguous(memory_format=torch.channels_last)
    taps = _as_f32(weight).reshape(channels, 9).t().contiguous()  # (9, C)
    bias32 = _f32(bias)
    y = torch.empty(batch, height, width, channels, dtype=torch.float32)
    lib.vz_dwconv3x3(batch, height, width, channels, x32.data_ptr(), x32.stride(0), x32.stride(2), x32.stride(3),
                     taps.data_ptr(), _ptr(bias32), int(silu), y.data_ptr(), y.stride(0), y.stride(1), y.stride(2),
                     torch.get_num_threads())
    return y.permute(0, 3, 1, 2)
