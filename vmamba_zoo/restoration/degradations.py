"""Synthetic degradations that turn a clean image into a restoration input.

All functions take and return (H, W, C) arrays: ``uint8`` images in, and either ``uint8``
(bicubic, JPEG) or float32 in [0, 1] (noise; **not clipped**, as in MambaIR/BasicSR's
``denoising_color`` task) out.  Randomness comes only from the ``numpy.random.Generator``
or ``RandomState`` passed in, so validation pairs are reproducible.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np

__all__ = [
    "bicubic_downsample",
    "matlab_imresize",
    "add_gaussian_noise",
    "jpeg_compress",
    "mod_crop",
    "Degradation",
    "parse_degradations",
    "apply_degradations",
    "total_scale",
]

RandomSource = Union[np.random.Generator, np.random.RandomState]


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that H and W are multiples of ``scale`` (BasicSR's ``mod_crop``)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``imresize`` 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


def _resize_weights(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``imresize`` contributions along one axis (antialiased when shrinking).

    Returns:
        indices (out_len, P) into the input (symmetric border handling) and weights
        (out_len, P) summing to 1 per output sample.
    """
    width = 4.0 / scale if scale < 1 else 4.0
    # centre of output sample i (1-based) in input coordinates (1-based)
    u = np.arange(1, out_len + 1, dtype=np.float64) / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(np.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(scale * dist) if scale < 1 else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    # symmetric ("mirror with repeat") padding at both ends, as MATLAB does
    period = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx0 = period[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(w != 0, axis=0)  # drop taps that are zero for every output sample
    return idx0[:, keep], w[:, keep]


def matlab_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """Bicubic resize with MATLAB ``imresize`` semantics (the SR benchmarks' LR images).

    Antialiased cubic (a = -0.5) kernel widened by ``1/scale`` when shrinking, symmetric
    border handling, rows first then columns, float64 arithmetic.

    Args:
        img: (H, W, C) array; ``uint8`` input gives a rounded ``uint8`` output (as MATLAB),
            float input a float64 output.
        scale: size factor (0.5 for x2 downsampling).

    Returns:
        (ceil(H * scale), ceil(W * scale), C) array.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if img.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {img.shape}")
    x = img.astype(np.float64)
    h, w = x.shape[:2]
    out_h, out_w = int(np.ceil(h * scale)), int(np.ceil(w * scale))
    idx, wt = _resize_weights(h, out_h, scale)
    x = np.einsum("opc,op->oc", x[idx].reshape(out_h, idx.shape[1], -1), wt).reshape(out_h, w, -1)
    idx, wt = _resize_weights(w, out_w, scale)
    x = np.einsum("hopc,op->hoc", x[:, idx].reshape(out_h, out_w, idx.shape[1], -1), wt)
    if img.dtype == np.uint8:
        return np.clip(np.round(x), 0, 255).astype(np.uint8)
    return x


def bicubic_downsample(img: np.ndarray, scale: int) -> np.ndarray:
    """Downsample a ``uint8`` (H, W, C) image by an integer ``scale`` like MATLAB's ``imresize``.

    This is how the SR benchmarks' (Set5, Urban100, DIV2K) LR images were made;
    see :func:`matlab_imresize`.

    Returns:
        (H // scale, W // scale, C) ``uint8`` array (H, W must be multiples of ``scale``).
    """
    if img.dtype != np.uint8:
        raise ValueError(f"bicubic_downsample expects a uint8 image, got {img.dtype}")
    h, w = img.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not a multiple of scale {scale}; mod_crop it first")
    return np.ascontiguousarray(matlab_imresize(img, 1.0 / scale))


def add_gaussian_noise(img: np.ndarray, sigma: float, rng: RandomSource, bgr_noise_order: bool = True) -> np.ndarray:
    """Additive white Gaussian noise of std ``sigma / 255`` on [0, 1] values, without clipping.

    Args:
        img: (H, W, C) ``uint8`` or float image ([0, 255] for uint8, [0, 1] for float).
        sigma: noise level on the 0..255 scale (15, 25, 50 in the literature).
        rng: numpy random source.  MambaIR's test protocol is ``RandomState(0)`` per image.
        bgr_noise_order: draw the (H, W, 3) noise array in BGR channel order and apply it
            reversed to the RGB image, so that a given seed reproduces BasicSR's noisy
            images (which are BGR arrays) exactly.

    Returns:
        (H, W, C) float32 noisy image (values may leave [0, 1]).
    """
    x = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    noise = rng.normal(0.0, sigma / 255.0, x.shape)
    if bgr_noise_order and x.shape[2] == 3:
        noise = noise[..., ::-1]
    return (x + noise).astype(np.float32)


def jpeg_compress(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG-encode and decode a ``uint8`` (H, W, C) image with PIL at ``quality`` (1..95)."""
    from PIL import Image

    if img.dtype != np.uint8:
        raise ValueError(f"jpeg_compress expects a uint8 image, got {img.dtype}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    pil = Image.fromarray(img[..., 0] if img.shape[2] == 1 else img)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        out = np.asarray(im.convert(pil.mode))
    return out[..., None] if out.ndim == 2 else out


@dataclass(frozen=True)
class Degradation:
    """One degradation step: ``kind`` in {'bicubic', 'noise', 'jpeg'} and its parameter."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in ("bicubic", "noise", "jpeg"):
            raise ValueError(f"unknown degradation {self.kind!r}; use 'bicubic', 'noise' or 'jpeg'")
        if self.kind == "bicubic" and (int(self.value) != self.value or self.value < 1):
            raise ValueError(f"bicubic scale must be a positive integer, got {self.value}")
        if self.kind == "noise" and self.value < 0:
            raise ValueError(f"noise sigma must be >= 0, got {self.value}")


_PARAM_NAMES = {"bicubic": "scale", "noise": "sigma", "jpeg": "quality"}


def parse_degradations(spec: Union[Mapping, Sequence[Mapping]]) -> list[Degradation]:
    """Parse ``dict(type='noise', sigma=25)`` or a list of such dicts (applied in order).

    Accepted: ``dict(type='bicubic', scale=s)``, ``dict(type='noise', sigma=σ)``,
    ``dict(type='jpeg', quality=q)``.  Noise, which makes float images, must come last.
    """
    items = [spec] if isinstance(spec, Mapping) else list(spec)
    out = []
    for item in items:
        item = dict(item)
        kind = item.pop("type", None)
        if kind not in _PARAM_NAMES:
            raise ValueError(f"degradation needs type 'bicubic', 'noise' or 'jpeg', got {kind!r}")
        name = _PARAM_NAMES[kind]
        if set(item) != {name}:
            raise ValueError(f"degradation {kind!r} takes exactly one argument {name!r}, got {sorted(item)}")
        out.append(Degradation(kind, float(item[name])))
    for d in out[:-1]:
        if d.kind == "noise":
            raise ValueError("'noise' must be the last degradation (it produces unclipped float images)")
    return out


def total_scale(degradations: Sequence[Degradation]) -> int:
    """Product of the bicubic scales (the network's upscaling factor)."""
    s = 1
    for d in degradations:
        if d.kind == "bicubic":
            s *= int(d.value)
    return s


def apply_degradations(img: np.ndarray, degradations: Sequence[Degradation], rng: RandomSource) -> np.ndarray:
    """Apply the steps in order to a ``uint8`` (H, W, C) image.

    Returns:
        (h, w, C) float32 array in [0, 1] (unclipped when noise was added).
    """
    x = img
    for d in degradations:
        if d.kind == "bicubic":
            x = bicubic_downsample(x, int(d.value))
        elif d.kind == "jpeg":
            x = jpeg_compress(x, int(d.value))
        else:
            x = add_gaussian_noise(x, d.value, rng)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    return x.astype(np.float32)
