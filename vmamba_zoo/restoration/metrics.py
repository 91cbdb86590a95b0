"""PSNR and SSIM with BasicSR's conventions (the numbers restoration papers report).

BasicSR (``basicsr/metrics/psnr_ssim.py``), and hence MambaIR, SwinIR, HAT and most
restoration papers, evaluate like this:

* images are ``uint8``-range ``[0, 255]`` arrays; network outputs are first clamped to
  ``[0, 1]``, multiplied by 255 and **rounded** (:func:`tensor_to_image` does this);
* ``crop_border`` pixels are removed from every edge (SR: ``crop_border = scale``);
* optionally only the luma ``Y`` of BT.601 (MATLAB ``rgb2ycbcr``) is compared:
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B)`` for ``R, G, B`` in ``[0, 1]``;
  BasicSR's ``to_y_channel`` assumes **BGR** arrays (cv2 reading order) and passes the
  values through ``float32``; :func:`to_y_channel` reproduces those ``Y`` values bit for bit;
* PSNR ``= 10 log10(255^2 / MSE)`` (``inf`` for identical images), computed in float64;
* SSIM per channel with an 11x11 Gaussian window (sigma 1.5), ``C1 = (0.01*255)^2``,
  ``C2 = (0.03*255)^2``, statistics filtered in 'valid' mode (the 5-pixel frame where
  the window does not fit is dropped), the SSIM map averaged, then channels averaged.

The one deliberate difference: BasicSR averages the squared error of ``Y`` images in
float32 (``np.mean`` of a float32 array); here every mean is taken in float64.  The two
agree to about 1e-6 dB.

Only numpy is needed (no OpenCV, no BasicSR).
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np

__all__ = [
    "calculate_psnr",
    "calculate_ssim",
    "to_y_channel",
    "gaussian_window_1d",
    "tensor_to_image",
]

InputOrder = Literal["HWC", "CHW"]
ChannelOrder = Literal["rgb", "bgr"]

# BT.601 luma weights of MATLAB's rgb2ycbcr for R, G, B in [0, 1]; output in [16, 235].
_Y_WEIGHTS_RGB = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5


def _to_hwc(img: np.ndarray, input_order: str, name: str) -> np.ndarray:
    """Return ``img`` as an (H, W, C) float64 array (a 2-D image gets C = 1)."""
    if input_order not in ("HWC", "CHW"):
        raise ValueError(f"input_order must be 'HWC' or 'CHW', got {input_order!r}")
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    elif img.ndim == 3:
        if input_order == "CHW":
            img = img.transpose(1, 2, 0)
    else:
        raise ValueError(f"{name} must be a 2-D (H, W) or 3-D image array, got shape {img.shape}")
    return img.astype(np.float64)


def to_y_channel(img: np.ndarray, channel_order: ChannelOrder = "bgr") -> np.ndarray:
    """BT.601 luma of a colour image, exactly as BasicSR's ``to_y_channel``.

    Args:
        img: (H, W, 3) array with values in [0, 255] (any real dtype).  A (H, W, 1)
            or (H, W) grey image is returned unchanged (as float64 (H, W, 1)), like BasicSR.
        channel_order: ``'bgr'`` (BasicSR's assumption: images read with cv2) or ``'rgb'``.

    Returns:
        (H, W, 1) float64 array of ``Y`` in [16, 235] (values rounded through float32
        exactly as BasicSR does, so they match BasicSR's bit for bit).
    """
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    img = np.asarray(img)
    if img.ndim == 2:
        return img.astype(np.float64)[..., None]
    if img.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {img.shape}")
    if img.shape[2] != 3:
        return img.astype(np.float64)
    weights = _Y_WEIGHTS_RGB if channel_order == "rgb" else _Y_WEIGHTS_RGB[::-1]
    # BasicSR: float32 [0, 1] input, float64 dot product, /255 and a float32 cast, *255 in float32.
    x = img.astype(np.float32) / np.float32(255.0)
    y = np.dot(x, np.asarray(weights, dtype=np.float64)) + _Y_OFFSET
    y = (y / 255.0).astype(np.float32) * np.float32(255.0)
    return y.astype(np.float64)[..., None]


def _prepare(
    img: np.ndarray,
    img2: np.ndarray,
    crop_border: int,
    input_order: str,
    test_y_channel: bool,
    channel_order: ChannelOrder,
) -> tuple[np.ndarray, np.ndarray]:
    a = _to_hwc(img, input_order, "img")
    b = _to_hwc(img2, input_order, "img2")
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative int, got {crop_border!r}")
    if crop_border:
        if 2 * crop_border >= min(a.shape[:2]):
            raise ValueError(f"crop_border={crop_border} leaves nothing of a {a.shape[:2]} image")
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        a = to_y_channel(a, channel_order)
        b = to_y_channel(b, channel_order)
    return a, b


def calculate_psnr(
    img: np.ndarray,
    img2: np.ndarray,
    crop_border: int = 0,
    input_order: InputOrder = "HWC",
    test_y_channel: bool = False,
    channel_order: ChannelOrder = "bgr",
) -> float:
    """PSNR in dB between two [0, 255] images, BasicSR's ``calculate_psnr``.

    Args:
        img, img2: images of equal shape, (H, W, C), (C, H, W) or (H, W), range [0, 255].
        crop_border: pixels removed from each edge before comparing (SR: the scale).
        input_order: ``'HWC'`` or ``'CHW'`` (ignored for 2-D inputs).
        test_y_channel: compare only the BT.601 ``Y`` channel of colour images.
        channel_order: colour order of 3-channel inputs, used only for ``Y``: ``'bgr'``
            (BasicSR's assumption) or ``'rgb'``.

    Returns:
        PSNR in dB (``inf`` for identical images).
    """
    a, b = _prepare(img, img2, crop_border, input_order, test_y_channel, channel_order)
    mse = float(np.mean((a - b) ** 2, dtype=np.float64))
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(255.0 * 255.0 / mse)


def gaussian_window_1d(size: int = _SSIM_WINDOW, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps (the same as ``cv2.getGaussianKernel(size, sigma)``)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation of an (H, W) array with ``taps`` x ``taps``, 'valid' part only.

    Returns an (H - k + 1, W - k + 1) array, k = len(taps).
    """
    k = len(taps)
    h, w = x.shape
    rows = sum(taps[i] * x[i : h - k + 1 + i, :] for i in range(k))
    return sum(taps[j] * rows[:, j : w - k + 1 + j] for j in range(k))


def _ssim_single_channel(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W) float64 arrays in [0, 255] (Gaussian 11x11, sigma 1.5, valid)."""
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    taps = gaussian_window_1d()
    mu1 = _filter_valid(a, taps)
    mu2 = _filter_valid(b, taps)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = _filter_valid(a * a, taps) - mu1_sq
    sigma2_sq = _filter_valid(b * b, taps) - mu2_sq
    sigma12 = _filter_valid(a * b, taps) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean(dtype=np.float64))


def calculate_ssim(
    img: np.ndarray,
    img2: np.ndarray,
    crop_border: int = 0,
    input_order: InputOrder = "HWC",
    test_y_channel: bool = False,
    channel_order: ChannelOrder = "bgr",
) -> float:
    """SSIM between two [0, 255] images, BasicSR's ``calculate_ssim``.

    Arguments as :func:`calculate_psnr`.  Each image side must be at least 11 pixels
    after cropping (the Gaussian window must fit).

    Returns:
        SSIM averaged over the valid SSIM map and over channels.
    """
    a, b = _prepare(img, img2, crop_border, input_order, test_y_channel, channel_order)
    if min(a.shape[:2]) < _SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels after cropping, "
            f"got {a.shape[:2]}")
    return float(np.mean([_ssim_single_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def tensor_to_image(tensor, min_max: Sequence[float] = (0.0, 1.0), round_to_uint8: bool = True) -> np.ndarray:
    """A (C, H, W) or (1, C, H, W) tensor to an (H, W, C) [0, 255] array, as BasicSR's ``tensor2img``.

    The tensor is clamped to ``min_max``, rescaled to [0, 1], multiplied by 255 and
    (by default) rounded to ``uint8``: the quantisation every reported PSNR includes.
    The channel order is kept (pass ``channel_order='rgb'`` to the metrics for RGB tensors).

    Returns:
        (H, W, C) ``uint8`` array (float64 in [0, 255] if ``round_to_uint8=False``).
    """
    import torch  # local: the metrics themselves need only numpy

    if not torch.is_tensor(tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(tensor).__name__}")
    t = tensor.detach()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {t.shape[0]}")
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise ValueError(f"expected a (C, H, W) tensor, got shape {tuple(tensor.shape)}")
    lo, hi = float(min_max[0]), float(min_max[1])
    t = (t.float().cpu().clamp(lo, hi) - lo) / (hi - lo)
    img = t.permute(1, 2, 0).numpy()
    if round_to_uint8:
        return (img * 255.0).round().astype(np.uint8)
    return img.astype(np.float64) * 255.0

