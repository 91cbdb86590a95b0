"""Benchmark the selective-scan backends at VMamba shapes.

Prints forward and forward+backward time per backend, the bytes each pass
must move at least, the achieved GB/s and its share of the GPU's memory
bandwidth, and writes JSON (``--out``).  The baseline in the same run is the
chunked PyTorch path (``cpu`` backend, which also runs on CUDA tensors).

    python tools/bench_scan.py --out benchmarks/scan_h100.json
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from typing import Callable, Dict, List, Optional

import torch

from vmamba_zoo_kernels import selective_scan

LOG = logging.getLogger("bench_scan")

# (batch, dim, groups, N, L): the rows of the kernel issue (official kernel: 1.10/4.35, 2.19/8.61, 12.65/60.1,
# 1.10/4.44 ms forward / forward+backward on one H100)
SHAPES = [(128, 384, 4, 1, 3136), (128, 768, 4, 1, 3136), (128, 768, 4, 16, 3136), (128, 1536, 4, 1, 784)]
OFFICIAL_MS = {SHAPES[0]: (1.10, 4.35), SHAPES[1]: (2.19, 8.61), SHAPES[2]: (12.65, 60.1), SHAPES[3]: (1.10, 4.44)}
# the chunked PyTorch path's backward keeps its (batch, dim, N, L) states for autograd: past this it does not fit
MAX_AUTOGRAD_STATES = 4e8
PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


def peak_bandwidth(name: str) -> Optional[float]:
    for key, value in PEAK_BANDWIDTH.items():
        if key in name:
            return value
    return None


def min_bytes(batch: int, dim: int, groups: int, n_state: int, length: int, backward: bool) -> int:
    """Bytes a pass must move at least: bf16 u/delta/B/C, fp32 out (fwd); plus fp32 dout in, bf16 du/ddelta
    and fp32 dB/dC out (bwd)."""
    elems = batch * dim * length
    bc = batch * groups * n_state * length
    fwd = elems * (2 + 2 + 4) + bc * 2 * 2
    if not backward:
        return fwd
    bwd = elems * (2 + 2 + 4 + 2 + 2) + bc * 2 * 2 + bc * 4 * 2
    return fwd + bwd


def make(batch, dim, groups, n_state, length, device, requires_grad):
    dt = torch.bfloat16
    g = torch.Generator(device=device).manual_seed(0)
    kw = dict(device=device, generator=g)
    x = dict(
        u=torch.randn(batch, dim, length, **kw).to(dt),
        delta=(torch.randn(batch, dim, length, **kw) * 0.5 - 2).to(dt),
        A=-torch.rand(dim, n_state, **kw) - 0.5,
        B=torch.randn(batch, groups, n_state, length, **kw).to(dt),
        C=torch.randn(batch, groups, n_state, length, **kw).to(dt),
        D=torch.ones(dim, device=device),
        delta_bias=torch.rand(dim, **kw) * 0.1,
    )
    if requires_grad:
        for v in x.values():
            v.requires_grad_()
    return x


def time_cuda(fn: Callable[[], None], warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def time_cpu(fn: Callable[[], None], warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters * 1e3


def bench_backend(backend: str, shape, device: str, warmup: int, iters: int) -> Dict[str, float]:
    timer = time_cuda if device == "cuda" else time_cpu
    x = make(*shape, device=device, requires_grad=True)
    args = [x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], None, x["delta_bias"], True]
    kw = dict(out_dtype=torch.float32, backend=backend)

    def fwd():
        with torch.no_grad():
            selective_scan(*args, **kw)

    grad_out = torch.randn(shape[0], shape[1], shape[4], device=device)

    def fwd_bwd():
        out = selective_scan(*args, **kw)
        out.backward(grad_out)

    result = dict(fwd_ms=timer(fwd, warmup, iters), fwd_bwd_ms=None)
    batch, dim, _, n_state, length = shape
    if backend == "triton" or batch * dim * n_state * length <= MAX_AUTOGRAD_STATES:
        result["fwd_bwd_ms"] = timer(fwd_bwd, max(1, warmup // 2), max(1, iters // 2))
    return result


def environment() -> Dict[str, str]:
    env = dict(torch=torch.__version__, python=platform.python_version())
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = "not installed"
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda or ""
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["threads"] = str(torch.get_num_threads())
    return env


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["triton", "cpu"])
    parser.add_argument("--shapes", nargs="+", default=None,
                        help="shapes as batch,dim,groups,N,L (default: the kernel issue's table)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--baseline-iters", type=int, default=3, help="iterations for the slow baseline backends")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else SHAPES
    env = environment()
    peak = peak_bandwidth(env.get("gpu", ""))
    rows = []
    header = (f"{'batch,dim,G,N,L':>24} {'backend':>8} {'fwd ms':>9} {'fwd+bwd ms':>11} {'fwd GB/s':>9} "
              f"{'fwd %peak':>9} {'f+b GB/s':>9} {'official fwd/f+b':>17}")
    print(header)
    for shape in shapes:
        for backend in args.backends:
            fast = backend == "triton"
            res = bench_backend(backend, shape, device, args.warmup if fast else 1,
                                args.iters if fast else args.baseline_iters)
            fwd_gbs = min_bytes(*shape, backward=False) / res["fwd_ms"] / 1e6
            fb_gbs = min_bytes(*shape, backward=True) / res["fwd_bwd_ms"] / 1e6 if res["fwd_bwd_ms"] else float("nan")
            row = dict(shape=dict(zip(("batch", "dim", "groups", "N", "L"), shape)), backend=backend, **res,
                       fwd_GBps=fwd_gbs, fwd_bwd_GBps=fb_gbs,
                       fwd_peak_share=(fwd_gbs * 1e9 / peak) if peak else None,
                       official_fwd_ms=OFFICIAL_MS.get(shape, (None, None))[0],
                       official_fwd_bwd_ms=OFFICIAL_MS.get(shape, (None, None))[1])
            rows.append(row)
            off = OFFICIAL_MS.get(shape)
            fb_ms = res["fwd_bwd_ms"] if res["fwd_bwd_ms"] is not None else float("nan")
            print(f"{','.join(map(str, shape)):>24} {backend:>8} {res['fwd_ms']:9.3f} {fb_ms:11.3f} "
                  f"{fwd_gbs:9.0f} {(fwd_gbs * 1e9 / peak * 100) if peak else float('nan'):8.1f}% {fb_gbs:9.0f} "
                  f"{(f'{off[0]:.2f}/{off[1]:.2f}') if off else '-':>17}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(environment=env, settings=dict(dtype="bf16 u/delta/B/C, fp32 A/D/delta_bias, fp32 out, "
                                                                   "softplus on", warmup=args.warmup,
                                                          iters=args.iters), rows=rows), f, indent=2)
        LOG.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
