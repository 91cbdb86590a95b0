"""Real photographs that ship inside PyPI packages, usable offline for training and tests.

Names have the form ``'<package>:<image>'``; :func:`load_image` also accepts ordinary file
paths, so datasets and configs can mix both.  The packages (scikit-image, PyWavelets) are
imported only when one of their images is requested.

Colour photographs (scikit-image 0.26): ``astronaut`` 512x512, ``chelsea`` 451x300,
``coffee`` 600x400, ``rocket`` 640x427, ``hubble_deep_field`` 1000x872, ``retina``
1411x1411, ``immunohistochemistry`` 512x512, ``motorcycle_left`` / ``motorcycle_right``
741x500.  Grey: ``skimage:camera``, ``skimage:moon``, ``skimage:coins``, ``pywt:aero``,
``pywt:ascent``, ``pywt:camera`` (512x512).
"""
from __future__ import annotations

import importlib
import os
from typing import Callable, Dict, Tuple

import numpy as np

__all__ = ["SAMPLE_IMAGES", "COLOR_PHOTOS", "load_image", "list_sample_images"]

# name -> (module, attribute, index into a returned tuple or None)
SAMPLE_IMAGES: Dict[str, Tuple[str, str, int | None]] = {
    "skimage:astronaut": ("skimage.data", "astronaut", None),
    "skimage:chelsea": ("skimage.data", "chelsea", None),
    "skimage:coffee": ("skimage.data", "coffee", None),
    "skimage:rocket": ("skimage.data", "rocket", None),
    "skimage:hubble_deep_field": ("skimage.data", "hubble_deep_field", None),
    "skimage:retina": ("skimage.data", "retina", None),
    "skimage:immunohistochemistry": ("skimage.data", "immunohistochemistry", None),
    "skimage:motorcycle_left": ("skimage.data", "stereo_motorcycle", 0),
    "skimage:motorcycle_right": ("skimage.data", "stereo_motorcycle", 1),
    "skimage:camera": ("skimage.data", "camera", None),
    "skimage:moon": ("skimage.data", "moon", None),
    "skimage:coins": ("skimage.data", "coins", None),
    "pywt:aero": ("pywt.data", "aero", None),
    "pywt:ascent": ("pywt.data", "ascent", None),
    "pywt:camera": ("pywt.data", "camera", None),
}

#: The colour photographs among :data:`SAMPLE_IMAGES`.
COLOR_PHOTOS = tuple(k for k in SAMPLE_IMAGES if k.startswith("skimage:") and k.split(":")[1] not in
                     ("camera", "moon", "coins"))


def list_sample_images() -> list[str]:
    """Names accepted by :func:`load_image` besides file paths."""
    return sorted(SAMPLE_IMAGES)


def _load_sample(name: str) -> np.ndarray:
    module_name, attr, index = SAMPLE_IMAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"sample image {name!r} needs the package providing {module_name!r}; "
                          f"install it (pip install scikit-image PyWavelets)") from err
    loader: Callable[[], object] = getattr(module, attr)
    img = loader()
    if index is not None:
        img = img[index]
    return np.asarray(img)


def load_image(source: str, color: str = "rgb") -> np.ndarray:
    """Load an image as a ``uint8`` array.

    Args:
        source: a sample name such as ``'skimage:astronaut'`` or a path to an image file.
        color: ``'rgb'`` -> (H, W, 3); ``'gray'`` -> (H, W, 1), luma by ITU-R 601-2
            (PIL's ``convert('L')``, the same weights as ``cv2.IMREAD_GRAYSCALE``).

    Returns:
        (H, W, 3) or (H, W, 1) ``uint8`` array, RGB order.
    """
    from PIL import Image

    if color not in ("rgb", "gray"):
        raise ValueError(f"color must be 'rgb' or 'gray', got {color!r}")
    if source in SAMPLE_IMAGES:
        arr = _load_sample(source)
        if arr.dtype != np.uint8:
            raise ValueError(f"sample image {source!r} is {arr.dtype}, expected uint8")
        if arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[..., :3]
        img = Image.fromarray(arr)
    elif ":" in source and not os.path.exists(source) and source.split(":")[0] in ("skimage", "pywt"):
        raise ValueError(f"unknown sample image {source!r}; choose from {list_sample_images()}")
    else:
        if not os.path.isfile(source):
            raise FileNotFoundError(f"image file not found: {source!r}")
        with Image.open(source) as im:
            img = im.copy()
    img = img.convert("RGB" if color == "rgb" else "L")
    out = np.asarray(img, dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out
