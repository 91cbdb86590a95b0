"""Train a detector, segmentor, classifier or restoration model with mmengine.

Usage::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp [--amp-dtype bfloat16]]
        [--auto-scale-lr] [--cfg-options key=value ...]
    torchrun --nproc_per_node 8 tools/train.py CONFIG --launcher pytorch

Works for any mmengine config (mmdet 3, mmseg 1, the zoo's own): the
toolbox is selected by the config's ``default_scope``.  Differences from the
toolboxes' own ``tools/train.py``:

* ``import vmamba_zoo.mm`` registers the zoo's components, so configs work
  even without ``custom_imports``;
* mmengine 0.10.7 loads checkpoints with torch's default ``weights_only=True``
  (torch >= 2.6) but pickles ``HistoryBuffer``/numpy objects into them, so
  ``--resume`` and ``load_from`` would fail; the exact globals they need are
  allow-listed, and objects of other classes in foreign checkpoints (e.g. the
  yacs config in official VMamba files) become inert placeholders, so no
  pickled code runs (see :mod:`vmamba_zoo.mm.checkpoint`);
* without CUDA, ``--launcher pytorch`` trains with gloo on CPU
  (:mod:`vmamba_zoo.mm.dist`).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import List, Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import vmamba_zoo.mm  # noqa: F401  (registers the zoo's components)
from vmamba_zoo.mm.amp import AMP_DTYPES, use_amp
from vmamba_zoo.mm.checkpoint import register_checkpoint_loader, register_mmengine_safe_globals
from vmamba_zoo.mm.dist import setup_cpu_distributed, shutdown_distributed


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a model with an mmengine config")
    parser.add_argument("config", help="config file path")
    parser.add_argument("--work-dir", help="directory for logs and checkpoints "
                        "(default: ./work_dirs/<config name>)")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (AmpOptimWrapper)")
    parser.add_argument("--amp-dtype", choices=AMP_DTYPES,
                        help="with --amp: the autocast dtype (default: mmengine's, float16); bfloat16 runs the "
                        "zoo's fused VSS blocks (float16 runs them module by module)")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale the LR by total batch size / auto_scale_lr.base_batch_size")
    parser.add_argument("--resume", nargs="?", type=str, const="auto",
                        help="resume from CKPT, or without a value from the latest checkpoint in the work dir")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override config entries, e.g. train_cfg.max_iters=100")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                        help="job launcher (pytorch = torchrun)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.amp_dtype is not None and not args.amp:
        parser.error("--amp-dtype needs --amp")
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def build_config(args: argparse.Namespace) -> Config:
    """Load the config and apply the command-line options."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        use_amp(cfg, args.amp_dtype)
    if args.auto_scale_lr:
        if "auto_scale_lr" not in cfg or "base_batch_size" not in cfg.auto_scale_lr:
            raise ValueError("--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in the config")
        cfg.auto_scale_lr.enable = True
    if args.resume == "auto":
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv: Optional[List[str]] = None) -> Runner:
    """Parse ``argv``, build the runner and train; returns the runner."""
    args = parse_args(argv)
    register_mmengine_safe_globals()
    register_checkpoint_loader()
    cfg = build_config(args)
    if args.launcher == "pytorch" and not torch.cuda.is_available():
        setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)
    runner.train()
    return runner


if __name__ == "__main__":
    try:
        main()
    finally:
        shutdown_distributed()
