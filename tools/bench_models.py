#!/usr/bin/env python
"""Benchmark zoo and timm models side by side: img/s, latency, peak memory; JSON + table.

Modes (see vmamba_zoo/benchmark.py): fp32 inference, bf16-autocast inference, and a
bf16-autocast training step (forward + backward, no optimizer) with its peak memory.
TF32 matmuls are off unless --tf32.  Examples::

    # GPU, the settings of the published tables (batch 128, 224x224)
    python tools/bench_models.py vmamba_tiny_s1l8 convnext_tiny swin_tiny_patch4_window7_224 \\
        --out benchmarks/h100.json
    # host-bound steps vary between processes: 3 fresh processes per model, interleaved, median reported
    # (several models on CUDA run in one fresh process each even without --repeats; --in-process: not);
    # the JSON also gives the time to issue a step (host_ms_median; per process: host_ms_samples), which
    # nears the latency where the host, not the GPU, sets the speed
    python tools/bench_models.py vmamba_tiny_s1l8 swin_tiny_patch4_window7_224 --repeats 3
    # CPU smoke test
    python tools/bench_models.py test_vmamba resnet18 --device cpu --batch-size 2 --img-size 64 \\
        --warmup 0 --iters 1
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import List, Optional

from vmamba_zoo.benchmark import MODES, format_table, run_benchmarks_auto


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="timm model names (zoo models after `import vmamba_zoo`)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cuda:1, cpu")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--tf32", action="store_true")
    p.add_argument("--out", type=Path, help="JSON output (default: benchmarks/<device>_bs<batch>.json)")
    p.add_argument("--repeats", type=int, default=1,
                   help="N > 1: every model in N fresh processes, interleaved across models; median and samples")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--isolate", action="store_const", const=True, dest="isolate",
                       help="every model in a fresh process (default with several models on CUDA, or --repeats)")
    where.add_argument("--in-process", action="store_const", const=False, dest="isolate",
                       help="every model in this process (later models of a host-bound table can measure slower)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    import timm

    import vmamba_zoo  # noqa: F401  (registers the zoo's models)

    unknown = [m for m in args.models if not timm.is_model(m)]
    if unknown:
        p.error(f"unknown models: {unknown}")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    settings = dict(device=args.device, batch_size=args.batch_size, img_size=args.img_size, modes=args.modes,
                    warmup=args.warmup, iters=args.iters, channels_last=args.channels_last, tf32=args.tf32,
                    progress=not args.no_progress)
    if args.isolate is False and args.repeats > 1:
        p.error("--repeats runs every model in fresh processes; drop --in-process")
    report = run_benchmarks_auto(args.models, repeats=args.repeats, isolate=args.isolate, **settings)
    print(format_table(report))
    out = args.out
    if out is None:
        slug = re.sub(r"[^a-z0-9]+", "-", report["environment"]["device_name"].lower()).strip("-")
        out = Path(__file__).resolve().parents[1] / "benchmarks" / f"{slug}_bs{args.batch_size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
