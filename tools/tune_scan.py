"""Sweep the Triton selective-scan tile sizes (chunk length, channels per program, warps) on a GPU.

Times the forward and the backward separately for each setting of
``VMAMBA_ZOO_SCAN_TILES`` and prints the fastest; the winners go into the
table of ``kernels/tiling.py``.

    python tools/tune_scan.py --shapes 128,384,4,1,3136 128,768,4,16,3136
"""
from __future__ import annotations

import argparse
import itertools
import os
from typing import List, Optional

import torch

from vmamba_zoo_kernels import selective_scan


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["128,384,4,1,3136", "128,768,4,16,3136"])
    parser.add_argument("--block-l", nargs="+", type=int, default=[256, 512, 1024])
    parser.add_argument("--block-d", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--warps", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("tuning needs a CUDA GPU")
    for spec in args.shapes:
        batch, dim, groups, n_state, length = (int(v) for v in spec.split(","))
        g = torch.Generator(device="cuda").manual_seed(0)
        kw = dict(device="cuda", generator=g)
        u = torch.randn(batch, dim, length, **kw).bfloat16().requires_grad_()
        delta = (torch.randn(batch, dim, length, **kw) * 0.5 - 2).bfloat16().requires_grad_()
        A = (-torch.rand(dim, n_state, **kw) - 0.5).requires_grad_()
        B = torch.randn(batch, groups, n_state, length, **kw).bfloat16().requires_grad_()
        C = torch.randn(batch, groups, n_state, length, **kw).bfloat16().requires_grad_()
        D = torch.ones(dim, device="cuda", requires_grad=True)
        bias = (torch.rand(dim, **kw) * 0.1).requires_grad_()
        dout = torch.randn(batch, dim, length, device="cuda")
        results = []
        for bl, bd, w in itertools.product(args.block_l, args.block_d, args.warps):
            os.environ["VMAMBA_ZOO_SCAN_TILES"] = f"{bd},{bl},{w},{bd},{w}"

            def fwd():
                return selective_scan(u, delta, A, B, C, D, None, bias, True, out_dtype=torch.float32,
                                      backend="triton")

            try:
                out = fwd()
                out.backward(dout)
                torch.cuda.synchronize()
            except Exception as exc:  # a setting that does not compile or fit is reported and skipped
                print(f"{spec} bl={bl} bd={bd} w={w}: failed ({type(exc).__name__}: {str(exc)[:80]})")
                continue
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
            t_f = t_b = 0.0
            for _ in range(args.iters):
                ev[0].record()
                out = fwd()
                ev[1].record()
                out.backward(dout)
                ev[2].record()
                torch.cuda.synchronize()
                t_f += ev[0].elapsed_time(ev[1])
                t_b += ev[1].elapsed_time(ev[2])
            t_f, t_b = t_f / args.iters, t_b / args.iters
            results.append((t_f, t_b, bl, bd, w))
            print(f"{spec} bl={bl:5d} bd={bd:3d} w={w}: fwd {t_f:7.3f} ms  bwd {t_b:7.3f} ms", flush=True)
        for bl in args.block_l:
            sub = [r for r in results if r[2] == bl]
            if sub:
                bf, bb = min(sub, key=lambda r: r[0]), min(sub, key=lambda r: r[1])
                print(f"BEST {spec} bl={bl}: fwd {bf[0]:.3f} ms (bd={bf[3]}, w={bf[4]}); "
                      f"bwd {bb[1]:.3f} ms (bd={bb[3]}, w={bb[4]})", flush=True)
    os.environ.pop("VMAMBA_ZOO_SCAN_TILES", None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
