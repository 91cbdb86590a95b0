"""Multi-GPU (DDP) scaling of an mmengine training config: throughput and loss curves against one GPU.

:func:`scaling_study` runs ``tools/train.py`` three times on the same config, each in fresh processes:

* ``single``: one GPU, ``batch_per_gpu`` images per iteration: the per-GPU throughput baseline;
* ``ddp``: ``gpus`` processes through ``torch.distributed.run`` (torchrun), ``batch_per_gpu`` images each:
  the scaling run;
* ``single_total``: one GPU, ``gpus * batch_per_gpu`` images: the loss reference of the DDP run (same total
  batch).

Every run trains ``iters`` iterations (``IterBasedTrainLoop`` over an ``InfiniteSampler``, validation,
checkpoints and persistent data-loader workers off, the config's optimizer with a linear warm-up over the
first ``warmup`` iterations, then a constant learning rate: a config's epoch schedule does not fit a few
hundred iterations) with a :class:`~vmamba_zoo.mm.hooks.TrainRecordHook`.  The config each run trained is
written beside its logs.

An ``InfiniteSampler`` hands rank ``r`` of ``n`` the items ``r, r + n, r + 2n, ...`` of one seeded order, so
the DDP run's global batch ``i`` (the ranks' batches together) holds the same images as ``single_total``'s
batch ``i``; with the same seed the models start from the same weights.  What still differs: each rank's
data-loader workers draw their own augmentations, per-rank random draws in the model (drop path, Mixup, box
samplers), and the order of floating-point sums.  So the curves agree in their windowed means, not per
iteration; the study compares windowed means (:func:`compare_losses`: relative differences, and differences in
standard errors of the windows' scatter), and gives the same measures between ``single`` and
``single_total`` (half the batch: a different optimisation) as a control that the comparison can tell curves
apart.

Throughput: images per iteration (all ranks) over the median iteration time after ``warmup`` iterations
(mmengine's ``IterTimerHook`` times); scaling efficiency = DDP img/s / (``gpus`` x single img/s).
Without CUDA the runs use gloo on CPU (``tools/train.py``), which tests the study, not the speed.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .amp import use_amp

__all__ = ["RUNS", "run_shape", "sample_data_options", "prepare_config", "read_record", "throughput",
           "global_loss", "compare_losses", "scaling_study", "summarize", "format_summary"]

ROOT = Path(__file__).resolve().parents[2]

#: the runs of a study, in the order they run (see the module docstring and :func:`run_shape`)
RUNS: Tuple[str, ...] = ("single", "ddp", "single_total")

_log = logging.getLogger(__name__)


def run_shape(name: str, gpus: int, batch_per_gpu: int) -> Tuple[int, int]:
    """(processes, images per process) of the study's run ``name``."""
    shapes = dict(single=(1, batch_per_gpu), ddp=(gpus, batch_per_gpu), single_total=(1, gpus * batch_per_gpu))
    if name not in shapes:
        raise ValueError(f"unknown run {name!r}; choose from {list(RUNS)}")
    return shapes[name]


# ----------------------------------------------------------------------------- configs
def _task(cfg) -> str:
    """'classification' or 'detection', the tasks :func:`sample_data_options` has data for."""
    model_type = cfg.get("model", {}).get("type")
    if model_type == "ZooClassifier":
        return "classification"
    if cfg.get("default_scope") == "mmdet":
        return "detection"
    raise ValueError(f"sample data: supported are classification (model.type='ZooClassifier') and mmdet "
                     f"detection configs; this config has model.type={model_type!r}, "
                     f"default_scope={cfg.get('default_scope')!r}")


def _num_classes_keys(node: Any, prefix: str) -> List[str]:
    """Dotted keys of every ``num_classes`` entry under ``node`` (a config dict)."""
    keys = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}"
            if key == "num_classes":
                keys.append(path)
            keys.extend(_num_classes_keys(value, path))
    return keys


def sample_data_options(cfg, root: Path, image_size: int, images_per_class: int) -> Dict[str, Any]:
    """Write a sample dataset for ``cfg``'s task under ``root`` (:mod:`vmamba_zoo.mm.sample_data`) and return
    the config options that train on it: classification, an image folder of ``images_per_class`` crops of
    each of 3 photos at ``image_size``; detection, the COCO instance set (6 images of coins and galaxies) at
    ``image_size``.  Every ``num_classes`` of the model is set to the dataset's classes."""
    from . import sample_data

    task = _task(cfg)
    root = Path(root)
    if task == "classification":
        info = sample_data.make_image_folder_dataset(root, size=image_size, per_class=images_per_class)
        options: Dict[str, Any] = {"train_dataloader.dataset.data_root": info["data_root"],
                                   "train_dataloader.dataset.data_prefix": dict(img_path=info["img_path"])}
    else:
        info = sample_data.make_coco_dataset(root, size=image_size)
        options = {"train_dataloader.dataset.data_root": info["data_root"],
                   "train_dataloader.dataset.ann_file": info["ann_file"],
                   "train_dataloader.dataset.data_prefix": dict(img=info["img_prefix"]),
                   "train_dataloader.dataset.metainfo": dict(classes=tuple(info["classes"]))}
    for key in _num_classes_keys(cfg.get("model", {}), "model"):
        options[key] = len(info["classes"])
    return options


def prepare_config(config: Path, out: Path, *, batch_per_process: int, iters: int, warmup: int,
                   options: Optional[Dict[str, Any]] = None, amp_dtype: Optional[str] = None) -> Path:
    """Write to ``out`` the config one run of the study trains (see the module docstring); returns ``out``.

    ``options``: dotted keys set before the study's own changes (e.g. :func:`sample_data_options`, or
    ``model.backbone.init_cfg=None`` offline); ``amp_dtype``: ``'bfloat16'`` or ``'float16'`` trains under
    mmengine's ``AmpOptimWrapper`` in that dtype."""
    from mmengine.config import Config

    if batch_per_process < 1:
        raise ValueError(f"batch_per_process must be >= 1, got {batch_per_process}")
    if not 0 <= warmup < iters:
        raise ValueError(f"warmup ({warmup}) must be at least 0 and below iters ({iters})")
    cfg = Config.fromfile(str(config))
    if options:
        cfg.merge_from_dict(copy.deepcopy(options))
    cfg.train_dataloader.batch_size = batch_per_process
    cfg.train_dataloader.sampler = dict(type="InfiniteSampler", shuffle=True)
    # one iterator over an infinite sampler: persistent workers change nothing while training, and with
    # pin_memory their shutdown waits 5 s per worker (PyTorch issue 81794; a minute per run at 12 workers)
    cfg.train_dataloader.persistent_workers = False
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters + 1)
    for key in ("val_cfg", "val_dataloader", "val_evaluator"):
        cfg[key] = None
    cfg.param_scheduler = ([dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=warmup)]
                           if warmup > 0 else [])
    hooks = cfg.setdefault("default_hooks", {})
    hooks["checkpoint"] = dict(type="CheckpointHook", by_epoch=False, interval=-1, save_last=False)
    hooks.setdefault("logger", dict(type="LoggerHook"))["interval"] = max(1, min(10, iters // 10))
    cfg.setdefault("log_processor", {})["by_epoch"] = False
    cfg.custom_hooks = [h for h in cfg.get("custom_hooks", []) if h.get("type") != "TrainRecordHook"]
    cfg.custom_hooks.append(dict(type="TrainRecordHook"))
    if amp_dtype is not None:
        use_amp(cfg, amp_dtype)
    randomness = dict(cfg.get("randomness") or {})
    if randomness.get("seed") is None:  # the runs must start from the same weights and sample order
        randomness["seed"] = 0
    cfg.randomness = randomness
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(out))
    return out


# ----------------------------------------------------------------------------- records
def read_record(path: Path) -> Dict[str, Any]:
    """A :class:`~vmamba_zoo.mm.hooks.TrainRecordHook` file, checked: every rank recorded the same iterations."""
    record = json.loads(Path(path).read_text())
    ranks = record.get("ranks") or []
    if len(ranks) != record.get("world_size"):
        raise ValueError(f"{path}: {len(ranks)} rank records for world size {record.get('world_size')}")
    iters = [r["iter"] for r in ranks]
    if any(it != iters[0] for it in iters) or not iters[0]:
        raise ValueError(f"{path}: the ranks recorded different (or no) iterations")
    return record


def throughput(record: Dict[str, Any], warmup: int) -> Dict[str, Any]:
    """Speed of a recorded run over its iterations after the first ``warmup``: median and p90 iteration time
    (rank 0's; the ranks wait for each other every iteration), median data time, images per iteration (all
    ranks), img/s in all and per GPU (process)."""
    ranks = record["ranks"]
    steady = slice(warmup, None)
    times = [t for t in ranks[0]["time"][steady] if t is not None]
    data_times = [t for t in ranks[0]["data_time"][steady] if t is not None]
    if not times:
        raise ValueError(f"no iteration times after the first {warmup} iterations "
                         f"(of {len(ranks[0]['time'])}); lower the warm-up or train longer")
    per_rank = list(zip(*(r["images"][steady] for r in ranks)))  # per iteration: each rank's images
    if any(n is None for images in per_rank for n in images):
        raise ValueError("the record lacks the batch sizes (data_batch without 'inputs')")
    images = statistics.median(sum(images) for images in per_rank)
    time_median = statistics.median(times)
    world = record["world_size"]
    return dict(processes=world, iterations_timed=len(times), images_per_iter=images,
                iter_s_median=round(time_median, 5), iter_s_p90=round(_quantile(times, 0.9), 5),
                data_s_median=round(statistics.median(data_times), 5) if data_times else None,
                img_per_s=round(images / time_median, 2), img_per_s_per_gpu=round(images / time_median / world, 2))


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def global_loss(record: Dict[str, Any]) -> List[float]:
    """The loss over all ranks' images per iteration: the ranks' losses (each its batch's mean) weighted by
    their images."""
    out = []
    ranks = record["ranks"]
    for i in range(len(ranks[0]["loss"])):
        weights = [r["images"][i] or 1 for r in ranks]
        out.append(sum(r["loss"][i] * w for r, w in zip(ranks, weights)) / sum(weights))
    return out


def compare_losses(loss: Sequence[float], reference: Sequence[float], window: int) -> Dict[str, Any]:
    """Windowed means of two loss curves of equal length (windows of ``window`` >= 2 iterations, a partial last
    one dropped), their relative differences ``|mean - ref mean| / |ref mean|`` and their differences in
    standard errors, ``z = (mean - ref mean) / sqrt(var / n + ref var / n)`` with each window's scatter: a
    two-sample test per window.  Losses of random batches scatter by several percent per iteration, so a
    relative tolerance is arbitrary; ``z`` says whether a difference stands out of that scatter."""
    if len(loss) != len(reference):
        raise ValueError(f"loss curves of different lengths: {len(loss)} and {len(reference)}")
    if window < 2 or len(loss) < window:
        raise ValueError(f"window ({window}) must be between 2 and the curves' length ({len(loss)})")
    rows = []
    for start in range(0, len(loss) - window + 1, window):
        part, ref_part = loss[start:start + window], reference[start:start + window]
        mean, ref = statistics.fmean(part), statistics.fmean(ref_part)
        error = math.sqrt((statistics.variance(part) + statistics.variance(ref_part)) / window)
        z = (mean - ref) / error if error > 0 else (0.0 if mean == ref else math.copysign(math.inf, mean - ref))
        rows.append(dict(iters=[start, start + window], mean=round(mean, 5), reference=round(ref, 5),
                         rel_diff=round(abs(mean - ref) / abs(ref), 5), z=round(z, 3)))
    return dict(window=window, windows=rows, max_rel_diff=max(r["rel_diff"] for r in rows),
                mean_rel_diff=round(statistics.fmean(r["rel_diff"] for r in rows), 5),
                max_abs_z=max(abs(r["z"]) for r in rows), first_loss=[round(loss[0], 5), round(reference[0], 5)])


# ----------------------------------------------------------------------------- the study
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(config: Path, work_dir: Path, processes: int) -> List[str]:
    train = str(ROOT / "tools" / "train.py")
    if processes == 1:
        return [sys.executable, train, str(config), "--work-dir", str(work_dir)]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
            f"--master_port={_free_port()}", train, str(config), "--launcher", "pytorch", "--work-dir", str(work_dir)]


def _environment() -> Dict[str, Any]:
    """:func:`vmamba_zoo.benchmark.environment` of the first device, with every visible device, NCCL's and the
    OpenMMLab packages' versions."""
    import torch

    from vmamba_zoo.benchmark import environment

    cuda = torch.cuda.is_available()
    env = environment(torch.device("cuda", 0) if cuda else torch.device("cpu"))
    env["devices"] = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda
                      else [f"cpu ({os.cpu_count()} cores, gloo)"])
    env["nccl"] = ".".join(str(v) for v in torch.cuda.nccl.version()) if cuda else None
    for name in ("mmengine", "mmcv", "mmdet"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    return env


def _phases(record: Dict[str, Any], wall: Optional[Tuple[float, float]]) -> Dict[str, Optional[float]]:
    """Seconds from the processes' start to the first iteration (imports, model, data workers), of training,
    and from the last iteration to the processes' exit; None for a run read from an earlier study."""
    starts = [r.get("wall_start") for r in record["ranks"]]
    ends = [r.get("wall_end") for r in record["ranks"]]
    if wall is None or None in starts or None in ends:
        return dict(startup_s=None, train_s=None, exit_s=None)
    return dict(startup_s=round(min(starts) - wall[0], 1), train_s=round(max(ends) - min(starts), 1),
                exit_s=round(wall[1] - max(ends), 1))


def scaling_study(config: Path, work_dir: Path, *, gpus: int, batch_per_gpu: int, iters: int, warmup: int,
                  window: int, options: Optional[Dict[str, Any]] = None, amp_dtype: Optional[str] = None,
                  max_z: float = 3.0, runs: Sequence[str] = RUNS,
                  log: Callable[[str], None] = _log.info) -> Dict[str, Any]:
    """Run the study (see the module docstring) under ``work_dir`` and return its report.

    ``gpus`` >= 2 processes for the DDP run (CUDA: that many visible GPUs); ``window``: iterations per
    windowed mean of the loss comparison (:func:`compare_losses`); ``max_z``: the DDP curve matches
    ``single_total``'s if no window's means differ by more than ``max_z`` standard errors; ``runs``: a subset
    to run (the others are read from ``work_dir`` if recorded there); ``log``: progress messages.  Raises
    ``RuntimeError`` with the end of its output if a run fails."""
    import torch

    if gpus < 2:
        raise ValueError(f"gpus must be at least 2 for a DDP run, got {gpus}")
    if torch.cuda.is_available() and torch.cuda.device_count() < gpus:
        raise ValueError(f"gpus={gpus} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    unknown = set(runs) - set(RUNS)
    if unknown:
        raise ValueError(f"unknown runs {sorted(unknown)}; choose from {list(RUNS)}")
    work_dir = Path(work_dir).resolve()
    report: Dict[str, Any] = dict(environment=_environment(), settings=dict(
        config=str(config), gpus=gpus, batch_per_gpu=batch_per_gpu, iters=iters, warmup=warmup, window=window,
        amp_dtype=amp_dtype, max_z=max_z, options={k: repr(v) for k, v in (options or {}).items()}),
        runs={})
    records: Dict[str, Dict[str, Any]] = {}
    wall: Dict[str, Tuple[float, float]] = {}  # (process start, process end) of the runs made here
    for name in RUNS:
        processes, batch = run_shape(name, gpus, batch_per_gpu)
        run_dir = work_dir / name
        record_path = run_dir / "train_record.json"
        if name in runs:
            cfg_path = prepare_config(config, run_dir / "config.py", batch_per_process=batch,
                                      iters=iters, warmup=warmup, options=options, amp_dtype=amp_dtype)
            env = dict(os.environ)
            if torch.cuda.is_available():
                env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(processes))
            log(f"[{name}] {processes} process(es) x {batch} images, {iters} iterations")
            started = time.time()
            proc = subprocess.run(_command(cfg_path, run_dir, processes), cwd=ROOT, env=env, capture_output=True,
                                  text=True)
            ended = time.time()
            (run_dir / "output.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                raise RuntimeError(f"run {name!r} failed (exit {proc.returncode}); end of its output:\n"
                                   f"{(proc.stdout + proc.stderr)[-4000:]}")
            log(f"[{name}] done in {ended - started:.0f} s")
            wall[name] = (started, ended)
        if not record_path.exists():
            raise FileNotFoundError(f"{record_path}: run {name!r} has no record; run it (runs=...)")
        records[name] = read_record(record_path)
        report["runs"][name] = dict(throughput(records[name], warmup), batch_per_process=batch,
                                    **_phases(records[name], wall.get(name)),
                                    loss=[round(v, 5) for v in global_loss(records[name])],
                                    record=str(record_path.relative_to(work_dir)))
    report["scaling"] = summarize(report["runs"], gpus, window, max_z)
    return report


def summarize(runs: Dict[str, Dict[str, Any]], gpus: int, window: int, max_z: float) -> Dict[str, Any]:
    """The scaling part of a report from its ``runs`` (each with ``img_per_s`` and its global ``loss`` per
    iteration): efficiency, speed-up, the DDP loss curve against ``single_total``'s and the control
    (:func:`compare_losses`); :func:`scaling_study` calls it, and ``tools/ddp_scaling.py --rescore`` redoes it
    for a saved report with another window or ``max_z``."""
    single, ddp, total = runs["single"], runs["ddp"], runs["single_total"]
    loss = compare_losses(ddp["loss"], total["loss"], window)
    control = compare_losses(single["loss"], total["loss"], window)
    return dict(efficiency=round(ddp["img_per_s"] / (gpus * single["img_per_s"]), 4),
                speedup=round(ddp["img_per_s"] / single["img_per_s"], 4),
                loss_ddp_vs_single_total=loss, loss_match=loss["max_abs_z"] <= max_z,
                control_single_vs_single_total=dict(max_rel_diff=control["max_rel_diff"],
                                                    mean_rel_diff=control["mean_rel_diff"],
                                                    max_abs_z=control["max_abs_z"],
                                                    z=[row["z"] for row in control["windows"]]))


def format_summary(report: Dict[str, Any]) -> str:
    """A markdown table of a :func:`scaling_study` report."""
    s = report["settings"]
    lines = [f"{Path(s['config']).name}: {s['iters']} iterations, {s['batch_per_gpu']} images per GPU, "
             f"amp {s['amp_dtype']}, on {', '.join(report['environment']['devices'])}", "",
             "| run | processes | images / iter | iter s (median, p90) | data s | img/s | img/s per GPU "
             "| start / train / exit s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, run in report["runs"].items():
        lines.append(f"| {name} | {run['processes']} | {run['images_per_iter']:g} | {run['iter_s_median']:.4f}, "
                     f"{run['iter_s_p90']:.4f} | {run['data_s_median']} | {run['img_per_s']:.1f} | "
                     f"{run['img_per_s_per_gpu']:.1f} | {run.get('startup_s')} / {run.get('train_s')} / "
                     f"{run.get('exit_s')} |")
    sc = report["scaling"]
    cmp_ = sc["loss_ddp_vs_single_total"]
    control = sc["control_single_vs_single_total"]
    lines += ["", f"scaling efficiency {sc['efficiency']:.3f} (speed-up {sc['speedup']:.2f}x on {s['gpus']} GPUs); "
              f"loss, DDP vs one GPU at the same total batch, windowed means ({cmp_['window']} iterations): "
              f"at most {100 * cmp_['max_rel_diff']:.2f}% apart (mean {100 * cmp_['mean_rel_diff']:.2f}%), at most "
              f"{cmp_['max_abs_z']:.2f} standard errors ({'match' if sc['loss_match'] else 'NO match'} at "
              f"{s['max_z']:g}); control, half the batch on one GPU: at most {100 * control['max_rel_diff']:.2f}%, "
              f"{control['max_abs_z']:.2f} standard errors"]
    return "\n".join(lines)
