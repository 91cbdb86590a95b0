"""Benchmark the SS2D mixer core: fused kernel path vs materialise + scan + merge.

For each scan pattern and width, times ``SS2D.forward_core`` (the unfused path:
``pattern.scan`` copies, ``x_proj`` on the copies, the selective scan, and
``pattern.merge``) against :func:`vmamba_zoo.layers.fused_core.ss2d_core_fused`
(``x_proj`` on the map, one kernel that gathers every route's steps and adds
its outputs onto the merged map), forward and forward+backward, under bf16
autocast.  Prints a table and writes JSON.

    python tools/bench_mixer.py --out benchmarks/mixer_h100.json
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
from typing import Callable, List, Optional

import torch

from vmamba_zoo.layers import SS2D
from vmamba_zoo.layers.fused_core import ss2d_core_fused
from vmamba_zoo.scan import list_scan_patterns

LOG = logging.getLogger("bench_mixer")


def cuda_ms(fn: Callable[[], None], warmup: int, iters: int) -> float:
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


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", nargs="+", default=["cross", "atrous"])
    parser.add_argument("--dims", nargs="+", type=int, default=[96, 192], help="inner widths D of the core")
    parser.add_argument("--d-state", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not torch.cuda.is_available():
        parser.error("the fused path needs a CUDA GPU")
    import triton

    env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               python=platform.python_version())
    rows = []
    print(f"{'scan':>8} {'D':>5} {'unfused fwd':>12} {'fused fwd':>10} {'ratio':>6} {'unfused f+b':>12} "
          f"{'fused f+b':>10} {'ratio':>6}  (ms)")
    for scan in args.scans:
        if scan not in list_scan_patterns():
            LOG.warning("scan pattern %r is not registered; skipped", scan)
            continue
        for dim in args.dims:
            mixer = SS2D(d_model=dim, d_state=args.d_state, ssm_ratio=1.0, scan=scan, channel_first=True).cuda()
            # the core's input as a channels-last trunk produces it (a permuted (B, H, W, D) tensor)
            x = torch.randn(args.batch, dim, args.size, args.size, device="cuda", dtype=torch.bfloat16)
            x = x.to(memory_format=torch.channels_last).requires_grad_()
            grad = torch.randn(args.batch, dim, args.size, args.size, device="cuda")
            res = {}
            for name, core in (("unfused", mixer.forward_core), ("fused", lambda t: ss2d_core_fused(mixer, t))):
                def fwd():
                    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                        core(x)

                def fwd_bwd():
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        y = core(x)
                    y.float().backward(grad)

                res[f"{name}_fwd_ms"] = cuda_ms(fwd, args.warmup, args.iters)
                res[f"{name}_fwd_bwd_ms"] = cuda_ms(fwd_bwd, args.warmup, args.iters)
            res["fwd_speedup"] = res["unfused_fwd_ms"] / res["fused_fwd_ms"]
            res["fwd_bwd_speedup"] = res["unfused_fwd_bwd_ms"] / res["fused_fwd_bwd_ms"]
            rows.append(dict(scan=scan, dim=dim, d_state=args.d_state, batch=args.batch, size=args.size, **res))
            print(f"{scan:>8} {dim:>5} {res['unfused_fwd_ms']:12.3f} {res['fused_fwd_ms']:10.3f} "
                  f"{res['fwd_speedup']:6.2f} {res['unfused_fwd_bwd_ms']:12.3f} {res['fused_fwd_bwd_ms']:10.3f} "
                  f"{res['fwd_bwd_speedup']:6.2f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(environment=env, settings=dict(autocast="bf16", warmup=args.warmup, iters=args.iters),
                           rows=rows), f, indent=2)
        LOG.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
