"""In-process A/B of the chunked CPU selective scan: a baseline ``kernels/cpu.py`` against the current one.

The 2-core CI-class machine's timings drift by ±20% between processes, so both implementations run in
one process, alternating call by call: the stage-1 scan of VMamba-T (batch 1, K*D = 384, L = 3136, N = 1)
and a whole vmamba_tiny_s1l8 forward (batch 1, 224², eval, fp32) with the scan swapped under it, with
timm's convnext_tiny (the anchors' CPU reference) in the same rounds.

    git show <rev>:kernels/cpu.py > /tmp/cpu_base.py
    python benchmarks/cpu_scan_ab.py /tmp/cpu_base.py --base-label "<rev> kernels/cpu.py" --rounds 12 \
        --out benchmarks/cpu_scan_ab.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import time
from pathlib import Path

import timm
import torch

import vmamba_zoo  # noqa: F401  (registers the models)
import vmamba_zoo_kernels.cpu as current_cpu
import vmamba_zoo_kernels.dispatch as dispatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path, help="the baseline kernels/cpu.py")
    parser.add_argument("--base-label", default="", help="what the baseline is (e.g. a git revision), recorded")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("vmamba_zoo_kernels.cpu_base", args.base)
    base_cpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base_cpu)
    impls = {"base": base_cpu.selective_scan_chunked, "current": current_cpu.selective_scan_chunked}

    torch.manual_seed(0)
    model = timm.create_model("vmamba_tiny_s1l8").eval()
    image = torch.randn(1, 3, 224, 224)
    dims, length = 384, 3136
    scan_args = (torch.randn(1, dims, length), torch.randn(1, dims, length) * 0.5, -torch.rand(dims, 1) - 0.1,
                 torch.randn(1, 4, 1, length), torch.randn(1, 4, 1, length), torch.randn(dims), None,
                 torch.randn(dims) * 0.1, True)
    convnext = timm.create_model("convnext_tiny").eval()  # the anchors' CPU reference (goal: <= 1.2x its latency)
    convnext_ms = []
    times = {k: {"scan_ms": [], "model_ms": []} for k in impls}
    with torch.inference_mode():
        outputs = {k: f(*scan_args) for k, f in impls.items()}
        max_diff = float((outputs["base"] - outputs["current"]).abs().max())
        for _ in range(args.rounds):
            for name, fn in impls.items():
                dispatch.selective_scan_chunked = fn
                t0 = time.perf_counter()
                fn(*scan_args)
                times[name]["scan_ms"].append(1e3 * (time.perf_counter() - t0))
                t0 = time.perf_counter()
                model(image)
                times[name]["model_ms"].append(1e3 * (time.perf_counter() - t0))
            t0 = time.perf_counter()
            convnext(image)
            convnext_ms.append(1e3 * (time.perf_counter() - t0))
    dispatch.selective_scan_chunked = current_cpu.selective_scan_chunked
    summary = {name: {key: dict(median=round(statistics.median(v), 2), min=round(min(v), 2), samples=[round(x, 2) for x in v])
                      for key, v in entry.items()} for name, entry in times.items()}
    summary["convnext_tiny"] = {"model_ms": dict(median=round(statistics.median(convnext_ms), 2),
                                                 min=round(min(convnext_ms), 2), samples=[round(x, 2) for x in convnext_ms])}
    report = dict(base=args.base_label or str(args.base), cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(), torch=torch.__version__,
                  rounds=args.rounds, scan_output_max_abs_diff=max_diff, results=summary)
    for name, entry in summary.items():
        if name == "convnext_tiny":
            print(f"convnext_tiny forward median {entry['model_ms']['median']:.1f} ms (min {entry['model_ms']['min']:.1f})")
            continue
        print(f"{name:8s} stage-1 scan median {entry['scan_ms']['median']:.2f} ms (min {entry['scan_ms']['min']:.2f}) | "
              f"vmamba_tiny_s1l8 forward median {entry['model_ms']['median']:.1f} ms (min {entry['model_ms']['min']:.1f})")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
