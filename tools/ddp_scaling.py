#!/usr/bin/env python
"""Multi-GPU (DDP) scaling of a training config: per-GPU throughput and loss curves against one GPU.

Three runs of tools/train.py in fresh processes (see vmamba_zoo/mm/scaling.py): one GPU at
--batch-per-gpu (throughput baseline), torchrun on --gpus GPUs at --batch-per-gpu each (scaling), one
GPU at the DDP run's total batch (loss reference).  Prints a table and writes JSON.  Examples::

    # classification, the real recipe (RandAugment, Mixup/CutMix, EMA, bf16 AMP) on bundled photos
    python tools/ddp_scaling.py configs/classification/vmamba-tiny-s1l8_8xb128-300e_in1k.py --gpus 2 \\
        --batch-per-gpu 128 --iters 300 --sample-data --sample-size 256 --amp-dtype bfloat16 \\
        --work-dir work_dirs/ddp_cls --out benchmarks/ddp_cls.json
    # Mask R-CNN without downloading the ImageNet weights
    python tools/ddp_scaling.py configs/detection/mask-rcnn_vmamba-tiny-s1l8_fpn_1x_coco.py --gpus 2 \\
        --batch-per-gpu 2 --iters 200 --sample-data --sample-size 512 \\
        --cfg-options model.backbone.init_cfg=None --work-dir work_dirs/ddp_det --out benchmarks/ddp_det.json

Without CUDA the runs use gloo on CPU (a check of the study, not a speed).  ``--rescore REPORT --out FILE``
redoes the loss comparison of a saved report (another --window or --max-z) without running anything.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import List, Optional

from mmengine.config import Config, DictAction

from vmamba_zoo.mm.amp import AMP_DTYPES
from vmamba_zoo.mm.scaling import RUNS, format_summary, sample_data_options, scaling_study, summarize

_log = logging.getLogger("ddp_scaling")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, nargs="?", help="training config (not with --rescore)")
    p.add_argument("--gpus", type=int, default=2, help="processes (GPUs) of the DDP run")
    p.add_argument("--batch-per-gpu", type=int, help="images per GPU (required unless --rescore)")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--warmup", type=int, default=50,
                   help="iterations of linear LR warm-up, left out of the throughput")
    p.add_argument("--window", type=int, default=25, help="iterations per windowed mean of the loss comparison")
    p.add_argument("--max-z", type=float, default=3.0,
                   help="the DDP loss curve matches if no windowed mean differs by more standard errors")
    p.add_argument("--amp-dtype", choices=AMP_DTYPES, help="train under AmpOptimWrapper in this dtype")
    p.add_argument("--sample-data", action="store_true",
                   help="train on the bundled sample photos (classification image folder or COCO instances)")
    p.add_argument("--sample-size", type=int, default=256, help="sample images' side")
    p.add_argument("--sample-per-class", type=int, default=100, help="classification: crops per class")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS),
                   help="runs to (re)do; the others are read from --work-dir")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="config overrides for every run")
    p.add_argument("--work-dir", type=Path, help="where the runs train (required unless --rescore)")
    p.add_argument("--out", type=Path, help="JSON report (default: <work-dir>/scaling.json)")
    p.add_argument("--rescore", type=Path, metavar="REPORT",
                   help="no runs: redo the comparison of a saved report with --window / --max-z into --out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.rescore is not None:
        if args.out is None:
            p.error("--rescore needs --out")
        report = json.loads(args.rescore.read_text())
        report["settings"].update(window=args.window, max_z=args.max_z)
        report["scaling"] = summarize(report["runs"], report["settings"]["gpus"], args.window, args.max_z)
        args.out.write_text(json.dumps(report, indent=1))
        _log.info("%s\nwrote %s", format_summary(report), args.out)
        return 0
    if args.config is None or args.work_dir is None or args.batch_per_gpu is None:
        p.error("a config, --work-dir and --batch-per-gpu are needed (or --rescore REPORT)")

    options = dict(args.cfg_options or {})
    if args.sample_data:
        cfg = Config.fromfile(str(args.config))
        if options:
            cfg.merge_from_dict(dict(options))
        options.update(sample_data_options(cfg, args.work_dir.resolve() / "data", args.sample_size,
                                           args.sample_per_class))
    report = scaling_study(args.config, args.work_dir, gpus=args.gpus, batch_per_gpu=args.batch_per_gpu,
                           iters=args.iters, warmup=args.warmup, window=args.window, options=options,
                           amp_dtype=args.amp_dtype, max_z=args.max_z, runs=args.runs, log=_log.info)
    out = args.out or args.work_dir / "scaling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    _log.info("%s\nwrote %s", format_summary(report), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
