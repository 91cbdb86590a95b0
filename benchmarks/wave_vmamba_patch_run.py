#!/usr/bin/env python
"""Short learning run: wavelet-scan VMamba vs its cross-scan twin on 4-class photo-patch classification.

Task: which scikit-image photo (astronaut, coffee, chelsea, rocket) a 64x64 patch
comes from.  Patches are converted to grayscale (replicated to 3 channels) so that
colour alone does not solve it.  Training crops (random position, random
horizontal flip) come from the left 70 % of each photo; a fixed held-out set of
crops comes from the right 30 % (no pixel overlap with training crops).

Models: ``test_wave_vmamba`` and ``test_vmamba`` (identical parameter layout,
depths 1-1-2-1, dims 16-128, VMamba v2 blocks), num_classes 4, in two
configurations: as registered ("v2", with the MLPs), without the MLPs
("no_mlp", ``mlp_ratio=0``), and without the MLPs with an initialisation under which
the recurrence, i.e. the scan order, matters from the start ("no_mlp_scan_init":
D = 0 and softplus(dt_bias) in [0.1, 1] instead of D = 1 and [0.001, 0.1]).  For each seed both
start from the *same* initial weights (the wave model loads the cross model's
initial state dict), see the same batches in the same order, and are trained with
AdamW (lr 1e-3, wd 0.05, cosine to 0, batch 32) for ``--steps`` steps on one CPU
thread.  Writes ``benchmarks/wave_vmamba_patch_run.json``.

    python benchmarks/wave_vmamba_patch_run.py --steps 300 --seeds 0 1 2
    python benchmarks/wave_vmamba_patch_run.py --configs no_mlp --merge   # add one configuration
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

IMAGES = ("astronaut", "coffee", "chelsea", "rocket")
PATCH = 64
TRAIN_FRACTION = 0.7
OUT = Path(__file__).with_suffix(".json")
_logger = logging.getLogger("wave_vmamba_patch_run")


def load_photos() -> List[np.ndarray]:
    """The four photos as float32 grayscale arrays in [0, 1]."""
    from skimage import color, data

    out = []
    for name in IMAGES:
        img = getattr(data, name)()
        out.append(color.rgb2gray(img).astype(np.float32))
    return out


def crop(img: np.ndarray, y: int, x: int, flip: bool) -> torch.Tensor:
    patch = img[y:y + PATCH, x:x + PATCH]
    if flip:
        patch = patch[:, ::-1]
    t = torch.from_numpy(np.ascontiguousarray(patch))
    return ((t - 0.5) / 0.25).expand(3, PATCH, PATCH)


def sample_batch(photos: List[np.ndarray], batch: int, rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(batch):
        label = int(rng.integers(len(photos)))
        img = photos[label]
        h, w = img.shape
        x_max = int(w * TRAIN_FRACTION) - PATCH
        xs.append(crop(img, int(rng.integers(h - PATCH + 1)), int(rng.integers(x_max + 1)), bool(rng.integers(2))))
        ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


def held_out_set(photos: List[np.ndarray], per_class: int = 64, seed: int = 1234) -> Tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, img in enumerate(photos):
        h, w = img.shape
        x_min = int(w * TRAIN_FRACTION)
        for _ in range(per_class):
            xs.append(crop(img, int(rng.integers(h - PATCH + 1)), int(rng.integers(x_min, w - PATCH + 1)), False))
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Tuple[float, float]:
    model.eval()
    logits = torch.cat([model(x[i:i + 64]) for i in range(0, len(x), 64)])
    model.train()
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


CONFIGS = {"v2": {}, "no_mlp": {"mlp_ratio": 0.0}, "no_mlp_scan_init": {"mlp_ratio": 0.0, "scan_init": True}}


@torch.no_grad()
def scan_heavy_init(model: torch.nn.Module) -> None:
    """Make the recurrence visible at init: D = 0 (no skip) and softplus(dt_bias) log-uniform in [0.1, 1]."""
    from vmamba_zoo.layers import SS2D, dt_bias_init_

    for m in model.modules():
        if isinstance(m, SS2D):
            m.Ds.zero_()
            dt_bias_init_(m.dt_projs_bias, dt_min=0.1, dt_max=1.0)


def run_seed(seed: int, steps: int, batch: int, eval_every: int, photos, val,
             model_kwargs: Dict[str, float]) -> Dict[str, Dict[str, List[float]]]:
    import timm

    import vmamba_zoo  # noqa: F401

    model_kwargs = dict(model_kwargs)
    scan_init = model_kwargs.pop("scan_init", False)
    torch.manual_seed(seed)
    cross = timm.create_model("test_vmamba", num_classes=len(IMAGES), **model_kwargs)
    if scan_init:
        scan_heavy_init(cross)
    wave = timm.create_model("test_wave_vmamba", num_classes=len(IMAGES), **model_kwargs)
    wave.load_state_dict(cross.state_dict())  # identical initial weights
    curves: Dict[str, Dict[str, List[float]]] = {}
    for name, model in (("test_vmamba", cross), ("test_wave_vmamba", wave)):
        rng = np.random.default_rng(seed)  # same batches for both models
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
        log: Dict[str, List[float]] = {"train_loss": [], "eval_step": [], "val_loss": [], "val_acc": []}
        start = time.time()
        model.train()
        for step in range(1, steps + 1):
            x, y = sample_batch(photos, batch, rng)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            log["train_loss"].append(round(loss.item(), 5))
            if step % eval_every == 0 or step == steps:
                vl, va = evaluate(model, *val)
                log["eval_step"].append(step)
                log["val_loss"].append(round(vl, 5))
                log["val_acc"].append(round(va, 5))
                _logger.info("seed %d %s %s step %d train %.3f val %.3f acc %.3f", seed, model_kwargs, name, step,
                             loss.item(), vl, va)
        log["seconds"] = round(time.time() - start, 1)
        curves[name] = log
    return curves


def summarise(config_runs: Dict[str, Dict[str, dict]]) -> Dict[str, dict]:
    """Per model: final/best held-out accuracy and loss, last-50-step training loss, time (means over seeds)."""
    out = {}
    for name in ("test_vmamba", "test_wave_vmamba"):
        logs = [run[name] for run in config_runs.values()]
        out[name] = dict(
            final_val_acc_mean=round(float(np.mean([g["val_acc"][-1] for g in logs])), 4),
            final_val_acc=[g["val_acc"][-1] for g in logs],
            final_val_loss_mean=round(float(np.mean([g["val_loss"][-1] for g in logs])), 4),
            best_val_acc_mean=round(float(np.mean([max(g["val_acc"]) for g in logs])), 4),
            train_loss_last50_mean=round(float(np.mean([np.mean(g["train_loss"][-50:]) for g in logs])), 4),
            seconds_mean=round(float(np.mean([g["seconds"] for g in logs])), 1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    p.add_argument("--merge", action="store_true",
                   help="keep the other configurations' runs already in --out (same settings assumed)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    photos = load_photos()
    val = held_out_set(photos)
    previous = json.loads(args.out.read_text()) if args.merge and args.out.is_file() else {}
    runs: Dict[str, Dict[str, dict]] = dict(previous.get("runs", {}))
    for config in args.configs:
        runs[config] = {str(s): run_seed(s, args.steps, args.batch, args.eval_every, photos, val, CONFIGS[config])
                        for s in args.seeds}
    summary = {config: summarise(config_runs) for config, config_runs in runs.items()}
    report = {
        "task": "4-class grayscale 64x64 patch classification (scikit-image astronaut/coffee/chelsea/rocket); "
                "train crops from the left 70% of each photo, 256 held-out crops from the right 30%",
        "models": {"test_vmamba": "cross scan", "test_wave_vmamba": "wavelet scan (haar, 2 packet levels)"},
        "configs": {k: v or "as registered" for k, v in CONFIGS.items()},
        "settings": dict(steps=args.steps, batch=args.batch, eval_every=args.eval_every, seeds=args.seeds,
                         optimizer="AdamW lr 1e-3 wd 0.05, cosine to 0", threads=1, patch=PATCH,
                         init="identical initial weights per seed for both models; same batch order"),
        "environment": dict(torch=torch.__version__, python=platform.python_version(), machine=platform.machine()),
        "summary": summary,
        "runs": runs,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    _logger.info("wrote %s: %s", args.out, json.dumps(summary))


if __name__ == "__main__":
    main()
