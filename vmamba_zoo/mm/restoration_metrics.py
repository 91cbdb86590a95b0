"""mmengine metrics: PSNR / SSIM with BasicSR's conventions.

Each predicted (C, H, W) tensor and its ground truth are turned into ``uint8`` images as
BasicSR's ``tensor2img`` does (clamp to [0, 1], x255, round) and scored with
:func:`vmamba_zoo.restoration.metrics.calculate_psnr` / ``calculate_ssim``; the reported
value is the mean over images.  Tensors are RGB, so the luma uses RGB weights.

Registered in mmengine's root ``METRICS`` (as ``RestorationPSNR`` / ``RestorationSSIM``) by
:mod:`vmamba_zoo.mm.restoration`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric

from ..restoration.metrics import calculate_psnr, calculate_ssim, tensor_to_image

__all__ = ["RestorationPSNR", "RestorationSSIM"]


class _ImageMetric(BaseMetric):
    """Per-image metric averaged over the evaluation set.

    Args:
        crop_border: pixels removed from each edge (SR: the scale; denoising: 0).
        test_y_channel: score the BT.601 ``Y`` channel only (SR benchmarks).
        pred_key, gt_key: keys of the prediction and ground truth in each data sample.
        collect_device, prefix: as in mmengine's ``BaseMetric``.
    """

    metric_name = ""
    default_prefix = ""  # keys are plain 'PSNR' / 'SSIM' (pass prefix='...' to namespace them)
    _fn: Callable[..., float]

    def __init__(self, crop_border: int = 0, test_y_channel: bool = False, pred_key: str = "pred",
                 gt_key: str = "gt", collect_device: str = "cpu", prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if crop_border < 0:
            raise ValueError(f"crop_border must be >= 0, got {crop_border}")
        self.crop_border, self.test_y_channel = int(crop_border), bool(test_y_channel)
        self.pred_key, self.gt_key = pred_key, gt_key

    def process(self, data_batch: Any, data_samples: Sequence[Dict[str, Any]]) -> None:
        for sample in data_samples:
            if self.pred_key not in sample or self.gt_key not in sample:
                raise KeyError(f"{type(self).__name__} needs '{self.pred_key}' and '{self.gt_key}' in each "
                               f"data sample, got keys {sorted(sample)}")
            pred = tensor_to_image(sample[self.pred_key])
            gt = tensor_to_image(sample[self.gt_key])
            self.results.append(type(self)._fn(pred, gt, crop_border=self.crop_border,
                                               test_y_channel=self.test_y_channel, channel_order="rgb"))

    def compute_metrics(self, results: List[float]) -> Dict[str, float]:
        return {self.metric_name: float(np.mean(results))}


class RestorationPSNR(_ImageMetric):
    """Mean PSNR (dB), BasicSR's ``calculate_psnr`` on ``uint8``-rounded images."""

    metric_name = "PSNR"
    _fn = staticmethod(calculate_psnr)


class RestorationSSIM(_ImageMetric):
    """Mean SSIM, BasicSR's ``calculate_ssim`` on ``uint8``-rounded images."""

    metric_name = "SSIM"
    _fn = staticmethod(calculate_ssim)
