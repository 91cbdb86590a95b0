"""Paired restoration data made on the fly from clean images.

:class:`PairedDegradationDataset` reads clean images (a folder, file paths, or the
offline sample photos of :mod:`vmamba_zoo.restoration.sample_images`) and degrades them
on the fly (bicubic xs, Gaussian noise sigma, JPEG quality q, or a chain of these).

* ``mode='train'``: a random ``gt_size`` crop, random flips / 90-degree rotation (BasicSR's
  ``augment``), and fresh noise for every sample.  Each sample's numpy generator is seeded
  from torch's global generator, which mmengine seeds (``randomness=dict(seed=...)``) and
  which PyTorch seeds differently in every DataLoader worker, so training is reproducible
  and workers never repeat each other's samples.
* ``mode='val'``: the whole image (mod-cropped to the scale, optionally centre-cropped to
  ``val_size``) and noise from ``RandomState(seed)`` restarted for **every image**, exactly
  MambaIR's test protocol (``np.random.seed(0)`` per image), so validation pairs are fixed.

Items are ``dict(inputs=lq, data_samples=dict(gt=gt, img_path=..., scale=...))`` with
(C, h, w) / (C, H, W) float32 tensors in [0, 1] (RGB), the layout mmengine's Runner and
:class:`vmamba_zoo.mm.restoration_model.RestorationModel` expect.  The class itself needs
only torch and numpy; :mod:`vmamba_zoo.mm.restoration` registers it in mmengine's
``DATASETS``.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .degradations import apply_degradations, mod_crop, parse_degradations, total_scale
from .sample_images import load_image

__all__ = ["PairedDegradationDataset", "IMAGE_EXTENSIONS", "augment", "random_crop"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _list_folder(folder: str) -> List[str]:
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder!r}")
    return files


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size`` x ``size`` crop of an (H, W, C) array."""
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"image of {h}x{w} is smaller than the crop size {size}")
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return img[top : top + size, left : left + size]


def augment(img: np.ndarray, rng: np.random.Generator, hflip: bool = True, rotation: bool = True) -> np.ndarray:
    """BasicSR's ``augment``: random horizontal flip, vertical flip and transpose (8 dihedral views)."""
    if hflip and rng.random() < 0.5:
        img = img[:, ::-1]
    if rotation:
        if rng.random() < 0.5:
            img = img[::-1]
        if rng.random() < 0.5:
            img = img.transpose(1, 0, 2)
    return np.ascontiguousarray(img)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, C) array -> (C, H, W) float32 tensor (uint8 scaled to [0, 1])."""
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()


class PairedDegradationDataset(Dataset):
    """Clean images degraded on the fly into (input, ground truth) pairs.

    Args:
        images: a folder, or a list of image file paths and/or sample names such as
            ``'skimage:astronaut'`` (see :func:`vmamba_zoo.restoration.sample_images.load_image`).
        degradation: ``dict(type='noise', sigma=25)``, ``dict(type='bicubic', scale=4)``,
            ``dict(type='jpeg', quality=40)``, or a list of them applied in order
            (noise last).
        mode: ``'train'`` (random crops, augmentation, fresh noise) or ``'val'`` (whole
            images, fixed noise).
        gt_size: training crop size in ground-truth pixels (a multiple of the scale).
        repeat: how many times each image is listed per epoch (training on few images).
        color: ``'rgb'`` (3 channels) or ``'gray'`` (1 channel).
        seed: validation noise seed, reset for every image (MambaIR: 0).
        val_size: optional centre crop (ground-truth pixels) of validation images, to keep
            evaluation cheap; ``None`` keeps whole images.
        use_flip, use_rot: training augmentation switches.
        cache: keep decoded clean images in memory (sensible for small sets).
    """

    def __init__(
        self,
        images: Union[str, Sequence[str]],
        degradation: Union[Mapping, Sequence[Mapping]],
        mode: str = "train",
        gt_size: int = 64,
        repeat: int = 1,
        color: str = "rgb",
        seed: int = 0,
        val_size: Optional[int] = None,
        use_flip: bool = True,
        use_rot: bool = True,
        cache: bool = True,
    ) -> None:
        super().__init__()
        if mode not in ("train", "val"):
            raise ValueError(f"mode must be 'train' or 'val', got {mode!r}")
        if isinstance(images, str):
            if not os.path.isdir(images):
                raise ValueError(f"images={images!r} is not a folder; pass a folder or a list of images")
            images = _list_folder(images)
        self.sources: List[str] = list(images)
        if not self.sources:
            raise ValueError("images is empty")
        self.degradations = parse_degradations(degradation)
        self.scale = total_scale(self.degradations)
        if mode == "train" and gt_size % self.scale:
            raise ValueError(f"gt_size={gt_size} must be a multiple of the scale {self.scale}")
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        self.mode, self.gt_size, self.repeat, self.color = mode, int(gt_size), int(repeat), color
        self.seed, self.val_size = int(seed), val_size
        self.use_flip, self.use_rot, self.cache = use_flip, use_rot, cache
        self._cache: Dict[int, np.ndarray] = {}
        self.metainfo = dict(scale=self.scale, degradations=[(d.kind, d.value) for d in self.degradations],
                             color=color, mode=mode)

    def __len__(self) -> int:
        return len(self.sources) * (self.repeat if self.mode == "train" else 1)

    def _clean(self, index: int) -> np.ndarray:
        if index in self._cache:
            return self._cache[index]
        img = load_image(self.sources[index], self.color)
        if self.cache:
            self._cache[index] = img
        return img

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        index = idx % len(self.sources)
        gt = self._clean(index)
        if self.mode == "train":
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
            gt = augment(random_crop(gt, self.gt_size, rng), rng, self.use_flip, self.use_rot)
        else:
            gt = mod_crop(gt, self.scale)
            if self.val_size is not None:
                gt = mod_crop(self._centre_crop(gt, self.val_size), self.scale)
            rng = np.random.RandomState(self.seed)
        lq = apply_degradations(gt, self.degradations, rng)
        return dict(inputs=_to_tensor(lq),
                    data_samples=dict(gt=_to_tensor(gt), img_path=self.sources[index], scale=self.scale))

    @staticmethod
    def _centre_crop(img: np.ndarray, size: int) -> np.ndarray:
        h, w = img.shape[:2]
        th, tw = min(h, size), min(w, size)
        top, left = (h - th) // 2, (w - tw) // 2
        return img[top : top + th, left : left + tw]
