"""Effective receptive field (ERF) maps, as in RepLKNet / VMamba's ``analyze/erf.py``.

For each input x (random normal, or real images through the model's normalisation),
take a feature map F (B, C, h, w) of one stage, the scalar ``relu(F[:, :, h//2, w//2]).sum()``
and its gradient g w.r.t. x; the ERF is ``|g|`` summed over input channels and batch,
averaged over the inputs.  :func:`save_heatmap` writes it log-scaled (three decades
below the maximum) as a PNG with PIL only.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["stage_features", "effective_receptive_field", "erf_summary", "save_heatmap", "colorize"]

# viridis-like anchors (dark blue -> teal -> green -> yellow)
_CMAP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


def stage_features(model: nn.Module, x: torch.Tensor, stage: int = -1) -> torch.Tensor:
    """Feature map (B, C, h, w) of stage ``stage`` (negative counts from the end).

    Uses timm's ``forward_intermediates`` when the model has it (NCHW output), else
    ``forward_features`` (last stage only; NHWC converted by the model's ``output_fmt``).
    """
    if hasattr(model, "forward_intermediates") and hasattr(model, "feature_info"):
        n = len(model.feature_info)
        if not -n <= stage < n:
            raise ValueError(f"stage {stage} out of range for a model with {n} feature stages")
        feats = model.forward_intermediates(x, indices=[stage % n], intermediates_only=True)
        return feats[0]
    if stage not in (-1,):
        raise ValueError(f"{type(model).__name__} has no forward_intermediates: only stage -1 is available")
    f = model.forward_features(x)
    if f.dim() != 4:
        raise ValueError(f"{type(model).__name__}.forward_features returns {f.dim()}-D tokens, not a 2-D map")
    if getattr(model, "output_fmt", "NCHW") == "NHWC":
        f = f.permute(0, 3, 1, 2)
    return f


def effective_receptive_field(
    model: nn.Module,
    *,
    img_size: int = 224,
    samples: int = 8,
    images: Optional[Sequence] = None,
    stage: int = -1,
    seed: int = 0,
) -> np.ndarray:
    """Mean |d relu(F_center).sum() / d x| over inputs, summed over channels.

    Args:
        model: a timm/zoo model (put in eval mode here; its parameters get no grads).
        img_size: H = W of the inputs.
        samples: number of random inputs (ignored when ``images`` is given).
        images: PIL images; each is resized/normalised with the model's data config.
        stage: feature stage whose centre pixel is used.
        seed: seed of the random inputs.

    Returns:
        (img_size, img_size) float64 array.
    """
    model = model.eval()
    device = next(model.parameters()).device
    for p in model.parameters():
        p.requires_grad_(False)
    if images:
        from timm.data import create_transform, resolve_data_config

        cfg = resolve_data_config(model=model)
        tf = create_transform(input_size=(3, img_size, img_size), interpolation=cfg["interpolation"],
                              mean=cfg["mean"], std=cfg["std"], crop_pct=1.0)
        inputs = [tf(img)[None] for img in images]
    else:
        g = torch.Generator().manual_seed(seed)
        inputs = [torch.randn(1, 3, img_size, img_size, generator=g) for _ in range(samples)]
    acc = torch.zeros(img_size, img_size, dtype=torch.float64)
    for x in inputs:
        x = x.to(device).requires_grad_(True)
        f = stage_features(model, x, stage)
        h, w = f.shape[-2:]
        central = F.relu(f[:, :, h // 2, w // 2]).sum()
        (grad,) = torch.autograd.grad(central, x, allow_unused=True)
        if grad is not None:
            acc += grad.detach().abs().sum(dim=(0, 1)).double().cpu()
    return (acc / len(inputs)).numpy()


def erf_summary(erf: np.ndarray, thresholds: Sequence[float] = (0.2, 0.5, 0.99)) -> Dict[float, float]:
    """For each t: area fraction of the smallest centred square holding t of the total contribution."""
    total = float(erf.sum())
    h, w = erf.shape
    out: Dict[float, float] = {}
    for t in thresholds:
        if total <= 0:
            out[t] = float("nan")
            continue
        for r in range(1, max(h, w) // 2 + 2):
            cy, cx = h // 2, w // 2
            box = erf[max(0, cy - r): cy + r, max(0, cx - r): cx + r]
            if box.sum() >= t * total:
                out[t] = box.size / erf.size
                break
        else:
            out[t] = 1.0
    return out


def colorize(values: np.ndarray) -> np.ndarray:
    """Map [0, 1] values (H, W) to RGB uint8 (H, W, 3) with a viridis-like ramp."""
    v = np.clip(np.nan_to_num(values), 0.0, 1.0) * (len(_CMAP) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_CMAP) - 2)
    frac = (v - lo)[..., None]
    rgb = _CMAP[lo] * (1 - frac) + _CMAP[lo + 1] * frac
    return rgb.round().astype(np.uint8)


def save_heatmap(erf: np.ndarray, path: Union[str, Path], title: str = "", decades: float = 3.0,
                 min_side: int = 448) -> Path:
    """Write the ERF as a log-scaled heatmap PNG (with a colour bar on the right)."""
    from PIL import Image, ImageDraw

    a = erf / erf.max() if erf.max() > 0 else np.zeros_like(erf)
    k = 10.0 ** decades
    heat = np.log10(1.0 + k * a) / math.log10(1.0 + k)
    img = Image.fromarray(colorize(heat))
    scale = max(1, math.ceil(min_side / max(erf.shape)))
    img = img.resize((erf.shape[1] * scale, erf.shape[0] * scale), Image.NEAREST)
    bar_w, pad = 16, 8
    bar = colorize(np.linspace(1, 0, img.height)[:, None].repeat(bar_w, axis=1))
    canvas = Image.new("RGB", (img.width + pad + bar_w, img.height + (18 if title else 0)), "white")
    top = 18 if title else 0
    canvas.paste(img, (0, top))
    canvas.paste(Image.fromarray(bar), (img.width + pad, top))
    if title:
        ImageDraw.Draw(canvas).text((4, 3), title, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
