"""Train a restoration config, export its network to a shipped ``.safetensors`` file, and
score it on the config's held-out images against the noisy input and OpenCV's
``fastNlMeansDenoisingColored``.

Usage::

    OMP_NUM_THREADS=1 python tools/train_restoration_model.py \
        configs/restoration/wavelet_mambair_dn25_skimage.py \
        [--work-dir DIR] [--out vmamba_zoo/assets/restoration/NAME.safetensors] [--eval-only]

The config must define ``network`` (the network config dict), ``train_images``,
``heldout_images`` and ``sigma`` (Gaussian denoising).  The NLM strength is chosen on
crops of the training images, never on the held-out ones.  Results (PSNR/SSIM per image and mean, RGB, no border
crop, measured by :mod:`vmamba_zoo.restoration.metrics`) go to ``<work-dir>/heldout.json``
and are printed as a Markdown table for the model card.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import os.path as osp
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from vmamba_zoo.restoration.degradations import add_gaussian_noise
from vmamba_zoo.restoration.metrics import calculate_psnr, calculate_ssim
from vmamba_zoo.restoration.pretrained import load_shipped_model, save_shipped_weights
from vmamba_zoo.restoration.tiling import tiled_forward
from vmamba_zoo.restoration.sample_images import load_image

_logger = logging.getLogger("train_restoration_model")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--out", default=None, help="output .safetensors (default: vmamba_zoo/assets/restoration/"
                                               "<config name>.safetensors)")
    p.add_argument("--eval-only", action="store_true", help="skip training; score the existing --out file")
    return p.parse_args(argv)


def train(cfg, work_dir: str) -> torch.nn.Module:
    from mmengine.runner import Runner

    import vmamba_zoo.mm.restoration  # noqa: F401

    cfg.work_dir = work_dir
    runner = Runner.from_cfg(cfg)
    start = time.time()
    runner.train()
    _logger.info("training took %.1f s", time.time() - start)
    return runner.model.network


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255.0).round().astype(np.uint8)


def _nlm(noisy_u8: np.ndarray, h: float) -> np.ndarray:
    import cv2

    bgr = cv2.cvtColor(noisy_u8, cv2.COLOR_RGB2BGR)
    out = cv2.fastNlMeansDenoisingColored(bgr, None, h=h, hColor=h, templateWindowSize=7, searchWindowSize=21)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def tune_nlm_strength(images: List[str], sigma: float) -> float:
    """The NLM filter strength ``h`` (same for luma and colour) with the best mean PSNR on
    *training* images, from a small grid around sigma; the held-out set is not used."""
    best_h, best = sigma, -1.0
    for factor in (0.5, 0.65, 0.8, 1.0, 1.2):
        h = factor * sigma
        scores = []
        for name in images:
            gt = load_image(name, "rgb")[:256, :256]
            noisy = _u8(add_gaussian_noise(gt, sigma, np.random.RandomState(1)))
            scores.append(calculate_psnr(_nlm(noisy, h), gt, 0, channel_order="rgb"))
        if np.mean(scores) > best:
            best_h, best = h, float(np.mean(scores))
    _logger.info("NLM strength h=%.2f (mean PSNR %.2f dB on training crops)", best_h, best)
    return best_h


def evaluate(net: torch.nn.Module, images: List[str], sigma: float, nlm_h: float) -> Dict[str, Dict[str, float]]:
    """PSNR/SSIM (RGB, crop 0) of noisy input, OpenCV NLM and the network per image."""
    rows: Dict[str, Dict[str, float]] = {}
    for name in images:
        gt = load_image(name, "rgb")
        noisy = add_gaussian_noise(gt, sigma, np.random.RandomState(0))  # MambaIR's test protocol
        noisy_u8 = _u8(noisy)
        t0 = time.time()
        nlm = _nlm(noisy_u8, nlm_h)
        t_nlm = time.time() - t0
        x = torch.from_numpy(noisy.transpose(2, 0, 1).copy())[None]
        t0 = time.time()
        out = tiled_forward(net, x, tile_size=256, overlap=32)
        t_net = time.time() - t0
        pred = _u8(out[0].permute(1, 2, 0).numpy())
        row = {}
        for label, img in (("noisy", noisy_u8), ("nlm", nlm), ("net", pred)):
            row[f"{label}_psnr"] = calculate_psnr(img, gt, 0, channel_order="rgb")
            row[f"{label}_ssim"] = calculate_ssim(img, gt, 0, channel_order="rgb")
        row.update(nlm_seconds=t_nlm, net_seconds=t_net, height=gt.shape[0], width=gt.shape[1])
        rows[name] = row
    keys = [k for k in next(iter(rows.values())) if k.endswith(("psnr", "ssim"))]
    rows["mean"] = {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}
    return rows


def markdown(rows: Dict[str, Dict[str, float]]) -> str:
    lines = ["| image | noisy PSNR / SSIM | OpenCV NLM PSNR / SSIM | this model PSNR / SSIM |",
             "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['noisy_psnr']:.2f} / {r['noisy_ssim']:.4f} | {r['nlm_psnr']:.2f} / "
                     f"{r['nlm_ssim']:.4f} | {r['net_psnr']:.2f} / {r['net_ssim']:.4f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    from mmengine.config import Config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = args.work_dir or osp.join("work_dirs", name)
    out = args.out or osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "vmamba_zoo", "assets",
                               "restoration", f"{name}.safetensors")
    for key in ("network", "train_images", "heldout_images", "sigma"):
        if key not in cfg:
            raise ValueError(f"{args.config} must define {key!r} for this tool")
    if not args.eval_only:
        net = train(cfg, work_dir)
        arch_args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.network.items() if k != "type"}
        os.makedirs(osp.dirname(out), exist_ok=True)
        save_shipped_weights(net, arch_args, out, extra_metadata={"config": osp.basename(args.config),
                                                                   "sigma": str(cfg.sigma)})
        _logger.info("wrote %s (%.1f kB)", out, os.path.getsize(out) / 1024)
    net = load_shipped_model(out)
    nlm_h = tune_nlm_strength(list(cfg.train_images), float(cfg.sigma))
    rows = evaluate(net, list(cfg.heldout_images), float(cfg.sigma), nlm_h)
    rows["mean"]["nlm_h"] = nlm_h
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, "heldout.json"), "w") as f:
        json.dump(rows, f, indent=2)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    raise SystemExit(main())
