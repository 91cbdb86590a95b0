"""Evaluate a checkpoint with an mmengine config (mmdet 3, mmseg 1, the zoo's own).

Usage::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl]
        [--cfg-options key=value ...]
    torchrun --nproc_per_node 8 tools/test.py CONFIG CHECKPOINT --launcher pytorch

CHECKPOINT may be a checkpoint written by ``tools/train.py``, an official
VMamba / Spatial-Mamba / EfficientVMamba Mask R-CNN or UperNet checkpoint (the
backbone's official keys, ``backbone.layers...``/``backbone.outnorm0...``, are
converted on load by :class:`vmamba_zoo.mm.VMambaZooBackbone`), or an official
classification checkpoint for a classification config (converted by
:class:`vmamba_zoo.mm.ZooClassifier`).  No pickled code is run (see
``tools/train.py``).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import List, Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.evaluator import DumpResults
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import vmamba_zoo.mm  # noqa: F401  (registers the zoo's components)
from vmamba_zoo.mm.checkpoint import register_checkpoint_loader, register_mmengine_safe_globals
from vmamba_zoo.mm.dist import setup_cpu_distributed, shutdown_distributed


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint with an mmengine config")
    parser.add_argument("config", help="config file path")
    parser.add_argument("checkpoint", help="checkpoint file or URL")
    parser.add_argument("--work-dir", help="directory for the evaluation log and metrics")
    parser.add_argument("--out", help="also dump the raw predictions to this .pkl file")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override config entries, e.g. test_dataloader.batch_size=4")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                        help="job launcher (pytorch = torchrun)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    if args.out is not None and not args.out.endswith((".pkl", ".pickle")):
        parser.error(f"--out must be a .pkl file, got {args.out!r}")
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    """Parse ``argv``, build the runner and evaluate; returns the metrics dict."""
    args = parse_args(argv)
    register_mmengine_safe_globals()
    register_checkpoint_loader()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.launcher == "pytorch" and not torch.cuda.is_available():
        setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)
    if args.out is not None:
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    return runner.test()


if __name__ == "__main__":
    try:
        main()
    finally:
        shutdown_distributed()
