"""Small real-photo datasets for OpenMMLab training runs without a download (tests, tools/ddp_scaling.py).

Objects are segmented from photos shipped with scikit-image (no download):

* ``coin``: the 24 coins of ``skimage.data.coins()``, segmented with the
  classic elevation-map watershed (Sobel gradient, markers from dark
  background / bright coins), holes filled;
* ``galaxy``: the brightest galaxies of ``skimage.data.hubble_deep_field()``,
  Otsu threshold of the smoothed luminance.

Crops around the objects are resized to ``size`` x ``size`` and written as

* a COCO instance-segmentation set (``make_coco_dataset``): JPEG images plus
  ``annotations/instances_<split>.json`` with polygon masks;
* an ImageNet-style classification folder (``make_image_folder_dataset``):
  random crops of ``chelsea`` (cat), ``coins`` and ``hubble_deep_field``;
* an ADE20K-format semantic-segmentation set (``make_ade20k_dataset``):
  ``images/<split>/*.jpg`` and ``annotations/<split>/*.png`` where, as in
  ADE20K, 0 is "other" (ignored with ``reduce_zero_label=True``) and class k
  is stored as k + 1; here 1 = background, 2 = coin, 3 = galaxy, and object
  boundaries are 0.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage import color, data, filters, measure, morphology, segmentation, transform

__all__ = ["CLASSES", "SEG_CLASSES", "IMAGE_CLASSES", "photo_samples", "make_coco_dataset", "make_ade20k_dataset",
           "make_image_folder_dataset"]

CLASSES = ("coin", "galaxy")
SEG_CLASSES = ("background",) + CLASSES
IMAGE_CLASSES = ("cat", "coins", "galaxies")


def _coin_labels() -> Tuple[np.ndarray, np.ndarray]:
    gray = data.coins()
    markers = np.zeros_like(gray, dtype=np.int32)
    markers[gray < 30] = 1
    markers[gray > 150] = 2
    fg = ndi.binary_fill_holes(segmentation.watershed(filters.sobel(gray), markers) == 2)
    labels = measure.label(morphology.remove_small_objects(fg, max_size=200))
    return np.stack([gray] * 3, axis=-1), labels


def _galaxy_labels() -> Tuple[np.ndarray, np.ndarray]:
    rgb = data.hubble_deep_field()
    lum = filters.gaussian(color.rgb2gray(rgb), sigma=1)
    fg = lum > max(filters.threshold_otsu(lum), 0.2)
    labels = measure.label(morphology.remove_small_objects(fg, max_size=250))
    return rgb, labels


def _crop(rgb: np.ndarray, labels: np.ndarray, top: int, left: int, extent: int, size: int
          ) -> Tuple[np.ndarray, np.ndarray]:
    rgb = rgb[top:top + extent, left:left + extent]
    labels = labels[top:top + extent, left:left + extent]
    img = transform.resize(rgb, (size, size), order=1, preserve_range=True, anti_aliasing=True)
    lab = transform.resize(labels, (size, size), order=0, preserve_range=True, anti_aliasing=False)
    return img.round().astype(np.uint8), lab.astype(np.int32)


@lru_cache(maxsize=4)
def photo_samples(size: int = 128) -> Tuple[Tuple[str, np.ndarray, np.ndarray, Tuple[int, ...]], ...]:
    """Crops with instance labels.

    Returns:
        tuples ``(name, image (size, size, 3) uint8, instance map (size, size)
        int32 with 0 = no object, category index per instance id 1..n)``.
        Instances smaller than 40 pixels after cropping are dropped.
    """
    out = []
    rgb, labels = _coin_labels()
    h, w = labels.shape
    ext = 192
    for k, (top, left) in enumerate([(0, 0), (0, w - ext), (h - ext, 0), (h - ext, w - ext)]):
        out.append((f"coins_{k}",) + _crop(rgb, labels, top, left, ext, size) + (0,))
    rgb, labels = _galaxy_labels()
    h, w = labels.shape
    ext = 256
    regions = sorted(measure.regionprops(labels), key=lambda r: -r.area)[:2]
    for k, r in enumerate(regions):
        cy, cx = (int(c) for c in r.centroid)
        top = int(np.clip(cy - ext // 2, 0, h - ext))
        left = int(np.clip(cx - ext // 2, 0, w - ext))
        out.append((f"galaxies_{k}",) + _crop(rgb, labels, top, left, ext, size) + (1,))
    samples = []
    for name, img, lab, cat in out:
        ids = [i for i in np.unique(lab) if i and (lab == i).sum() >= 40]
        clean = np.zeros_like(lab)
        for new, i in enumerate(ids, 1):
            clean[lab == i] = new
        samples.append((name, img, clean, (cat,) * len(ids)))
    return tuple(samples)


def _polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons ``[x0, y0, x1, y1, ...]`` (pixel-corner coordinates) of a binary mask."""
    padded = np.pad(mask.astype(np.float32), 1)
    polys = []
    for contour in measure.find_contours(padded, 0.5):
        contour = measure.approximate_polygon(contour - 1, tolerance=0.5)
        if len(contour) < 3:
            continue
        xy = np.stack([contour[:, 1] + 0.5, contour[:, 0] + 0.5], axis=1)  # (row, col) -> (x, y)
        polys.append([round(float(v), 2) for v in xy.reshape(-1)])
    return polys


def make_coco_dataset(root: Path, size: int = 128, split: str = "train") -> Dict[str, object]:
    """Write a COCO instance-segmentation set under ``root``.

    Layout: ``root/<split>/<name>.jpg`` and ``root/annotations/instances_<split>.json``.

    Returns:
        ``dict(data_root, ann_file, img_prefix, classes, num_images, num_instances)``
        with ``ann_file``/``img_prefix`` relative to ``data_root``.
    """
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for img_id, (name, img, lab, cats) in enumerate(photo_samples(size), 1):
        fname = f"{name}.jpg"
        Image.fromarray(img).save(root / split / fname, quality=95)
        images.append(dict(id=img_id, file_name=fname, height=size, width=size))
        for inst, cat in enumerate(cats, 1):
            mask = lab == inst
            rows, cols = np.nonzero(mask)
            x0, y0, x1, y1 = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
            polys = _polygons(mask)
            if not polys:
                continue
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=cat + 1, iscrowd=0,
                             area=float(mask.sum()), bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                             segmentation=polys))
    coco = dict(images=images, annotations=anns,
                categories=[dict(id=i + 1, name=c, supercategory="object") for i, c in enumerate(CLASSES)])
    ann_file = f"annotations/instances_{split}.json"
    (root / ann_file).write_text(json.dumps(coco))
    return dict(data_root=str(root), ann_file=ann_file, img_prefix=f"{split}/", classes=CLASSES,
                num_images=len(images), num_instances=len(anns))


def make_ade20k_dataset(root: Path, size: int = 128, split: str = "training") -> Dict[str, object]:
    """Write an ADE20K-format semantic-segmentation set under ``root``.

    Layout: ``root/images/<split>/<name>.jpg``, ``root/annotations/<split>/<name>.png``
    (uint8; 0 = other/ignored, 1 = background, 2 = coin, 3 = galaxy).

    Returns:
        ``dict(data_root, img_path, seg_map_path, classes, num_images)``.
    """
    root = Path(root)
    img_dir, ann_dir = root / "images" / split, root / "annotations" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    samples = photo_samples(size)
    for name, img, lab, cats in samples:
        seg = np.ones(lab.shape, dtype=np.uint8)  # background
        for inst, cat in enumerate(cats, 1):
            seg[lab == inst] = cat + 2
        seg[segmentation.find_boundaries(lab, mode="inner")] = 0
        Image.fromarray(img).save(img_dir / f"{name}.jpg", quality=95)
        Image.fromarray(seg).save(ann_dir / f"{name}.png")
    return dict(data_root=str(root), img_path=f"images/{split}", seg_map_path=f"annotations/{split}",
                classes=SEG_CLASSES, num_images=len(samples))


def make_image_folder_dataset(root: Path, size: int = 64, per_class: int = 4, split: str = "train",
                              seed: int = 0) -> Dict[str, object]:
    """Write ``root/<split>/<class>/<k>.jpg``: ``per_class`` random crops (a third to
    two thirds of the photo's short side, resized to ``size``) of one photo per class.

    Returns:
        ``dict(data_root, img_path, classes, num_images)``.
    """
    rng = np.random.default_rng(seed)
    photos = {"cat": data.chelsea(), "coins": np.stack([data.coins()] * 3, axis=-1),
              "galaxies": data.hubble_deep_field()}
    for cls in IMAGE_CLASSES:
        img = photos[cls]
        folder = Path(root) / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        h, w = img.shape[:2]
        for k in range(per_class):
            ext = int(rng.integers(min(h, w) // 3, 2 * min(h, w) // 3))
            top, left = int(rng.integers(0, h - ext + 1)), int(rng.integers(0, w - ext + 1))
            crop = transform.resize(img[top:top + ext, left:left + ext], (size, size), order=1,
                                    preserve_range=True, anti_aliasing=True)
            Image.fromarray(crop.round().astype(np.uint8)).save(folder / f"{k}.jpg", quality=95)
    return dict(data_root=str(root), img_path=split, classes=IMAGE_CLASSES, num_images=per_class * len(IMAGE_CLASSES))
