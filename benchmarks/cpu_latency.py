"""CPU latency of zoo models against timm's, in one process, interleaved round by round.

The anchors' CPU setting: batch 1, 224x224, eval, fp32, all cores of the machine.  Each round runs every
entry once; the median over rounds is reported (a 2-core machine's timings drift by +-20% between
processes and over minutes, so entries are compared within rounds).  A zoo model can be listed twice:
``name`` uses the native CPU scan kernel (the default), ``name:chunked`` the chunked PyTorch scan
(``VMAMBA_ZOO_NATIVE_CPU=0`` for that call), ``name:aten-linear`` its linear layers through ``F.linear``
instead of oneDNN's fused kernel (``vmamba_zoo.layers.linear.USE_ONEDNN_CPU_LINEAR = False`` for that call).

    python benchmarks/cpu_latency.py vmamba_tiny_s1l8 vmamba_tiny_s1l8:chunked vmamba_tiny_s1l8:aten-linear \\
        convnext_tiny swin_tiny_patch4_window7_224 --rounds 10 --out benchmarks/cpu_latency.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Dict, List

import timm
import torch

import vmamba_zoo  # noqa: F401  (registers the models)
import vmamba_zoo.layers.linear as zoo_linear
from vmamba_zoo.benchmark import environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entries", nargs="+", help="model names; NAME:chunked runs the chunked CPU scan, "
                        "NAME:aten-linear the linear layers through F.linear")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--reference", default="convnext_tiny", help="entry the ratios are taken against")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    torch.manual_seed(0)
    image = torch.randn(1, 3, args.img_size, args.img_size)
    models = {}
    for entry in args.entries:
        name, _, variant = entry.partition(":")
        if variant not in ("", "chunked", "aten-linear"):
            parser.error(f"unknown variant {variant!r} in {entry!r} (':chunked' or ':aten-linear')")
        models[entry] = (timm.create_model(name).eval(), variant)
    native_before = os.environ.get("VMAMBA_ZOO_NATIVE_CPU")
    onednn_before = zoo_linear.USE_ONEDNN_CPU_LINEAR
    times: Dict[str, List[float]] = {entry: [] for entry in models}

    def run(entry: str) -> float:
        model, variant = models[entry]
        os.environ["VMAMBA_ZOO_NATIVE_CPU"] = "0" if variant == "chunked" else (native_before or "1")
        zoo_linear.USE_ONEDNN_CPU_LINEAR = onednn_before and variant != "aten-linear"
        t0 = time.perf_counter()
        model(image)
        return 1e3 * (time.perf_counter() - t0)

    try:
        with torch.inference_mode():
            for _ in range(args.warmup):
                for entry in models:
                    run(entry)
            for _ in range(args.rounds):
                for entry in models:
                    times[entry].append(run(entry))
    finally:
        zoo_linear.USE_ONEDNN_CPU_LINEAR = onednn_before
        if native_before is None:
            os.environ.pop("VMAMBA_ZOO_NATIVE_CPU", None)
        else:
            os.environ["VMAMBA_ZOO_NATIVE_CPU"] = native_before

    reference = statistics.median(times[args.reference]) if args.reference in times else None
    results = {}
    print(f"{'model':40s} {'median ms':>10s} {'min ms':>8s} {'vs ' + args.reference:>20s}")
    for entry, samples in times.items():
        median = statistics.median(samples)
        ratio = None if reference is None else median / reference
        results[entry] = dict(median_ms=round(median, 2), min_ms=round(min(samples), 2),
                              samples_ms=[round(s, 2) for s in samples],
                              ratio_to_reference=None if ratio is None else round(ratio, 3))
        print(f"{entry:40s} {median:10.1f} {min(samples):8.1f} {'' if ratio is None else f'{ratio:.2f}x':>20s}")
    report = dict(environment=environment(torch.device("cpu")), batch_size=1, img_size=args.img_size,
                  rounds=args.rounds, reference=args.reference, results=results)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
