"""Throughput / latency / peak-memory benchmark for zoo and timm models.

Used by ``vmamba-zoo bench`` and ``tools/bench_models.py``.  Three modes:

* ``infer_fp32``: eval, ``torch.inference_mode``, fp32 (TF32 matmuls off unless asked).
* ``infer_bf16``: the same under ``torch.autocast(dtype=torch.bfloat16)``.
* ``train_bf16``: one training step without optimizer -- forward, ``mean()`` loss,
  backward -- under bf16 autocast (the setting of the VMamba README's "train TP").

Each mode runs ``warmup`` untimed and ``iters`` timed iterations; throughput is
``batch_size * iters / total time``; latency is per batch (median, p90).  ``host_ms_median``
is the time until a step's work has been issued (before the device sync, so on a GPU
the host's share; it can include waits for a full launch queue): close to the latency
when the host, not the device, sets the speed (on the CPU they are the same).  Peak
memory is ``torch.cuda.max_memory_allocated`` (reset per mode); it is not
measured on CPU (reported as null).

A step whose speed is set by the host (Python and kernel launches: VMamba's
bf16 training step on an H100) reads differently from one process to the next
on the same machine -- up to ±10% in ``benchmarks/ab_session4`` -- so
:func:`run_benchmarks_repeated` runs every model in a fresh process, ``repeats``
rounds interleaved across the models, and reports the median with all samples.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import inspect
import json
import logging
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["MODES", "BenchResult", "bench_model", "environment", "run_benchmarks", "run_benchmarks_repeated",
           "aggregate_reports", "format_table", "isolate_by_default", "run_benchmarks_auto"]

_logger = logging.getLogger(__name__)

MODES = ("infer_fp32", "infer_bf16", "train_bf16")


@dataclasses.dataclass
class BenchResult:
    """One (model, mode) measurement.  ``error`` is set (and numbers None) when it failed, e.g. OOM."""

    model: str
    mode: str
    batch_size: int
    img_size: int
    params: int
    img_per_s: Optional[float] = None
    latency_ms_median: Optional[float] = None
    latency_ms_p90: Optional[float] = None
    host_ms_median: Optional[float] = None  # time to issue a step's work (see the module docstring)
    peak_mem_gib: Optional[float] = None
    error: Optional[str] = None
    img_per_s_samples: Optional[List[float]] = None  # one per process (run_benchmarks_repeated)
    host_ms_samples: Optional[List[float]] = None  # one per process, as img_per_s_samples


def environment(device: torch.device) -> Dict[str, Any]:
    """Versions and hardware, recorded next to every benchmark."""
    try:
        import triton

        triton_version: Optional[str] = triton.__version__
    except ImportError:
        triton_version = None
    import timm

    env: Dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": triton_version,
        "timm": timm.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": platform.python_version(),
        "tf32": torch.backends.cuda.matmul.allow_tf32,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if device.type == "cpu":  # which selective scan CPU inference ran (training always runs the chunked path)
        from vmamba_zoo_kernels.native_cpu import native_library

        library = native_library()
        env["cpu_scan"] = "chunked" if library is None else (
            "native, OpenMP" if library.vz_openmp() else "native, one thread")
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_loop(step: Callable[[], None], device: torch.device, warmup: int,
               iters: int) -> Tuple[List[float], List[float]]:
    """(wall time of each timed step, time until its work was issued), in seconds."""
    for _ in range(warmup):
        step()
    _sync(device)
    times, issued = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        _sync(device)
        times.append(time.perf_counter() - t0)
        issued.append(t1 - t0)
    return times, issued


def bench_model(
    model: nn.Module,
    name: str,
    mode: str,
    *,
    device: torch.device,
    batch_size: int,
    img_size: int,
    warmup: int = 5,
    iters: int = 20,
    channels_last: bool = False,
) -> BenchResult:
    """Benchmark one mode of an already built model (moved to ``device`` here)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
    if batch_size < 1 or img_size < 1 or iters < 1 or warmup < 0:
        raise ValueError("batch_size, img_size and iters must be >= 1, warmup >= 0")
    params = sum(p.numel() for p in model.parameters())
    result = BenchResult(model=name, mode=mode, batch_size=batch_size, img_size=img_size, params=params)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    x = torch.randn(batch_size, 3, img_size, img_size, device=device).to(memory_format=memory_format)
    bf16 = mode.endswith("bf16")
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)

    if mode.startswith("infer"):
        model.eval()

        def step() -> None:
            with torch.inference_mode(), autocast:
                model(x)
    else:
        model.train()

        def step() -> None:
            with autocast:
                out = model(x)
            out.float().mean().backward()
            model.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        times, issued = _time_loop(step, device, warmup, iters)
    except torch.cuda.OutOfMemoryError as e:
        result.error = f"out of memory: {str(e).splitlines()[0]}"
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return result
    total = sum(times)
    result.img_per_s = round(batch_size * iters / total, 2)
    result.latency_ms_median = round(1e3 * statistics.median(times), 3)
    result.latency_ms_p90 = round(1e3 * sorted(times)[min(len(times) - 1, int(0.9 * len(times)))], 3)
    result.host_ms_median = round(1e3 * statistics.median(issued), 3)
    if device.type == "cuda":
        result.peak_mem_gib = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return result


def _resolve_device(device: str) -> torch.device:
    """``device``, with "auto" meaning CUDA where available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def run_benchmarks(
    names: Sequence[str],
    *,
    device: str = "auto",
    batch_size: int = 128,
    img_size: int = 224,
    modes: Sequence[str] = MODES,
    warmup: int = 5,
    iters: int = 20,
    channels_last: bool = False,
    tf32: bool = False,
    progress: bool = True,
) -> Dict[str, Any]:
    """Benchmark timm/zoo models side by side.

    Returns:
        ``{"environment": {...}, "settings": {...}, "results": [BenchResult as dict, ...]}``.
    """
    import timm
    from tqdm import tqdm

    import vmamba_zoo  # noqa: F401  (registers the zoo's models)

    dev = _resolve_device(device)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; choose from {MODES}")
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    results: List[BenchResult] = []
    try:
        env = environment(dev)
        bar = tqdm(total=len(names) * len(modes), disable=not progress, unit="run", desc="bench")
        for name in names:
            model = timm.create_model(name, pretrained=False)
            for mode in modes:
                bar.set_postfix_str(f"{name} {mode}")
                results.append(bench_model(model, name, mode, device=dev, batch_size=batch_size, img_size=img_size,
                                           warmup=warmup, iters=iters, channels_last=channels_last))
                bar.update(1)
            del model
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        bar.close()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev_tf32
        torch.backends.cudnn.allow_tf32 = prev_tf32
    settings = dict(batch_size=batch_size, img_size=img_size, modes=list(modes), warmup=warmup, iters=iters,
                    channels_last=channels_last, tf32=tf32)
    return {"environment": env, "settings": settings, "results": [dataclasses.asdict(r) for r in results]}


def _run_isolated(name: str, settings: Dict[str, Any], workdir: Path, tag: str) -> Dict[str, Any]:
    """:func:`run_benchmarks` of one model in a fresh Python process (``python -m vmamba_zoo.benchmark``)."""
    spec_path, out_path = workdir / f"{tag}.spec.json", workdir / f"{tag}.report.json"
    spec_path.write_text(json.dumps(dict(settings, names=[name], progress=False)))
    proc = subprocess.run([sys.executable, "-m", "vmamba_zoo.benchmark", str(spec_path), str(out_path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark process for {name!r} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(out_path.read_text())


def run_benchmarks_repeated(names: Sequence[str], *, repeats: int, progress: bool = True,
                            **settings: Any) -> Dict[str, Any]:
    """:func:`run_benchmarks` with every model in a fresh process, ``repeats`` rounds interleaved across the
    models (round 1: each model once, round 2: ...), merged by :func:`aggregate_reports` (median img/s,
    every sample kept).  ``settings``: the other keyword arguments of :func:`run_benchmarks` (device,
    batch_size, img_size, modes, warmup, iters, channels_last, tf32)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    accepted = set(inspect.signature(run_benchmarks).parameters) - {"names", "progress"}
    unexpected = sorted(set(settings) - accepted)
    if unexpected:
        raise TypeError(f"run_benchmarks_repeated got unexpected settings {unexpected}; accepted: {sorted(accepted)}")
    unknown = [m for m in settings.get("modes", MODES) if m not in MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; choose from {MODES}")
    settings = dict(settings, modes=list(settings.get("modes", MODES)))
    reports = []
    with tempfile.TemporaryDirectory(prefix="vmamba-zoo-bench-") as tmp:
        for round_index in range(repeats):
            for i, name in enumerate(names):
                if progress:
                    _logger.info("bench round %d/%d: %s", round_index + 1, repeats, name)
                reports.append(_run_isolated(name, settings, Path(tmp), f"r{round_index}_m{i}"))
    return aggregate_reports(reports)


def isolate_by_default(names: Sequence[str], device: str, repeats: int = 1,
                       isolate: Optional[bool] = None) -> bool:
    """Whether to run every model in a fresh process: as asked (``isolate``), else with repeats, or with
    several models on CUDA.

    In one process, host-bound models measured after others can come out far slower than in a fresh
    process (H100, same day: spatial_mamba_tiny bf16 inference 3408 img/s as the 4th model of a table,
    5335 as the median of 3 fresh processes), so multi-model GPU tables isolate unless told not to.
    """
    if isolate is not None:
        return isolate
    if repeats > 1:
        return True
    return len(names) > 1 and _resolve_device(device).type == "cuda"


def run_benchmarks_auto(names: Sequence[str], *, repeats: int = 1, isolate: Optional[bool] = None,
                        **settings: Any) -> Dict[str, Any]:
    """:func:`run_benchmarks_repeated` (fresh processes) where :func:`isolate_by_default` says so, else
    :func:`run_benchmarks` in this process.  ``settings`` as for :func:`run_benchmarks`."""
    if isolate_by_default(names, settings.get("device", "auto"), repeats, isolate):
        return run_benchmarks_repeated(names, repeats=repeats, **settings)
    if repeats > 1:
        raise ValueError("repeats > 1 runs every model in fresh processes; it cannot run in this process")
    return run_benchmarks(names, **settings)


def aggregate_reports(reports: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Merge reports of the same settings (e.g. one per process and round) into one report: per (model, mode)
    the median img/s, latency and host time over the samples, the largest p90 latency and peak memory, every
    img/s in ``img_per_s_samples`` and host time in ``host_ms_samples`` (in the same order), and the first error
    if any sample failed (its img/s then come from the others)."""
    if not reports:
        raise ValueError("no reports to aggregate")
    settings = {k: v for k, v in reports[0]["settings"].items() if k != "repeats"}
    for other in reports[1:]:
        theirs = {k: v for k, v in other["settings"].items() if k != "repeats"}
        if theirs != settings:
            raise ValueError(f"reports with different settings cannot be merged: {settings} vs {theirs}")
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for report in reports:
        for r in report["results"]:
            groups.setdefault((r["model"], r["mode"]), []).append(r)
    merged = []
    for samples in groups.values():
        ok = [r for r in samples if r["error"] is None and r["img_per_s"] is not None]
        out = dict(samples[0])
        errors = [r["error"] for r in samples if r["error"] is not None]
        out["error"] = errors[0] if errors else None
        out["img_per_s_samples"] = [r["img_per_s"] for r in ok]
        out["img_per_s"] = round(statistics.median(out["img_per_s_samples"]), 2) if ok else None
        out["latency_ms_median"] = round(statistics.median(r["latency_ms_median"] for r in ok), 3) if ok else None
        out["latency_ms_p90"] = max(r["latency_ms_p90"] for r in ok) if ok else None
        hosts = [r.get("host_ms_median") for r in ok]  # absent from reports written before it existed
        if hosts and None not in hosts:
            out["host_ms_samples"], out["host_ms_median"] = hosts, round(statistics.median(hosts), 3)
        else:
            out["host_ms_samples"], out["host_ms_median"] = None, None
        peaks = [r["peak_mem_gib"] for r in ok if r["peak_mem_gib"] is not None]
        out["peak_mem_gib"] = max(peaks) if peaks else None
        merged.append(out)
    environment_ = dict(reports[0]["environment"], processes=len(reports),
                        dates=[r["environment"]["date"] for r in reports])
    rounds = max(len(s) for s in groups.values())
    return {"environment": environment_, "settings": dict(settings, repeats=rounds), "results": merged}


def _cell(r: Dict[str, Any]) -> str:
    if r["error"] and r["img_per_s"] is None:
        return r["error"][:12]
    samples = r.get("img_per_s_samples") or []
    cell = f"{r['img_per_s']:.1f}"
    if len(samples) > 1:
        cell += f" ({min(samples):.0f}-{max(samples):.0f})"
    if r["error"]:  # some processes failed; the number comes from the others
        cell += " +failed"
    return cell


def format_table(report: Dict[str, Any]) -> str:
    """Plain-text table: one row per model, img/s per mode, latency of the first mode and peak memory
    of the training step (of the last mode without one)."""
    rows: Dict[str, Dict[str, Any]] = {}
    modes: List[str] = list(report["settings"]["modes"])
    for r in report["results"]:
        rows.setdefault(r["model"], {"params": r["params"]})[r["mode"]] = r
    header = ["model", "params (M)"] + [f"{m} img/s" for m in modes] + [f"{m} ms" for m in modes[:1]] + [("train_bf16" if "train_bf16" in modes else modes[-1]) + " peak GiB"]
    lines = [header]
    for name, row in rows.items():
        cells = [name, f"{row['params'] / 1e6:.1f}"]
        for m in modes:
            r = row.get(m)
            cells.append("-" if r is None else _cell(r))
        first = row.get(modes[0]) if modes else None
        cells.append("-" if not first or first["latency_ms_median"] is None else f"{first['latency_ms_median']:.1f}")
        peak_mode = "train_bf16" if "train_bf16" in row else (modes[-1] if modes else None)
        peak = row[peak_mode]["peak_mem_gib"] if peak_mode in row else None
        cells.append("n/a" if peak is None else f"{peak:.2f}")
        lines.append(cells)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    env = report["environment"]
    title = (f"{env['device_name']} ({env['device']}), torch {env['torch']}, triton {env['triton']}, "
             f"batch {report['settings']['batch_size']}, {report['settings']['img_size']}px")
    if report["settings"].get("repeats", 1) > 1:
        title += f", median (min-max) of {report['settings']['repeats']} processes per model"
    elif "processes" in env:
        title += ", one fresh process per model"
    out = [title] + ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m vmamba_zoo.benchmark SPEC.json OUT.json``: the child process of :func:`run_benchmarks_repeated`."""
    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument("spec", type=Path, help="JSON: keyword arguments of run_benchmarks, with 'names'")
    parser.add_argument("out", type=Path, help="where to write the report (JSON)")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec.read_text())
    report = run_benchmarks(spec.pop("names"), **spec)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
