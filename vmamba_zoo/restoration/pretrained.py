"""Restoration weights shipped inside the package, and helpers to apply them to images.

>>> from vmamba_zoo.restoration import load_shipped_denoiser, restore_image
>>> net = load_shipped_denoiser()                  # sigma = 25 colour denoiser, CPU, eval mode
>>> clean = restore_image(net, noisy_uint8_rgb)     # (H, W, 3) uint8 -> (H, W, 3) uint8

Weights are ``.safetensors`` files in ``vmamba_zoo/assets/restoration/``; each file's
metadata holds the network class (``arch``) and its constructor arguments (``arch_args``,
JSON), so a file is self-describing.  Model cards: ``model_cards/<name>.md``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from .tiling import forward_padded, tiled_forward

__all__ = [
    "SHIPPED_MODELS",
    "DEFAULT_DENOISER",
    "shipped_weights_path",
    "load_shipped_model",
    "load_shipped_denoiser",
    "save_shipped_weights",
    "restore_image",
]

_ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "restoration")

#: name -> description of the shipped restoration weights.
SHIPPED_MODELS: Dict[str, Dict[str, Any]] = {
    "wavelet_mambair_dn25_skimage": dict(
        task="colour Gaussian denoising, sigma = 25 (0..255 scale), RGB in [0, 1]",
        config="configs/restoration/wavelet_mambair_dn25_skimage.py",
        model_card="model_cards/wavelet_mambair_dn25_skimage.md",
    ),
}
DEFAULT_DENOISER = "wavelet_mambair_dn25_skimage"


def _arch_classes() -> Dict[str, type]:
    from ..models.mambair import MambaIR
    from ..models.restoration_nets import SerpentUNet, WaveletMambaIR

    return {"MambaIR": MambaIR, "SerpentUNet": SerpentUNet, "WaveletMambaIR": WaveletMambaIR}


def shipped_weights_path(name: str = DEFAULT_DENOISER) -> str:
    """Path of the ``.safetensors`` file of a shipped model."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"no shipped weights for restoration model {name!r}; shipped: {sorted(SHIPPED_MODELS)} "
                         f"(other models need a checkpoint file)")
    path = os.path.join(_ASSET_DIR, f"{name}.safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"shipped weights {path!r} are missing from this installation "
                                f"(reinstall vmamba-zoo, or retrain with {SHIPPED_MODELS[name]['config']})")
    return path


def save_shipped_weights(network: nn.Module, arch_args: Mapping[str, Any], path: str,
                         extra_metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write a network's weights with the metadata :func:`load_shipped_model` needs."""
    from safetensors.torch import save_file

    arch = type(network).__name__
    if arch not in _arch_classes():
        raise ValueError(f"cannot ship a {arch}; supported: {sorted(_arch_classes())}")
    meta = {"arch": arch, "arch_args": json.dumps(dict(arch_args), sort_keys=True), "format": "vmamba-zoo-restoration-v1"}
    meta.update(dict(extra_metadata or {}))
    state = {k: v.detach().contiguous().cpu() for k, v in network.state_dict().items()}
    save_file(state, path, metadata=meta)


def load_shipped_model(name_or_path: Optional[str] = None, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Build a network from a shipped (or any zoo-format) ``.safetensors`` file, in eval mode.

    Args:
        name_or_path: a key of :data:`SHIPPED_MODELS` (``None``: :data:`DEFAULT_DENOISER`)
            or a path to a ``.safetensors`` file written by :func:`save_shipped_weights`.
        device: where to put the network.

    Raises:
        ValueError: the name has no shipped weights (the message lists those that do).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    name_or_path = DEFAULT_DENOISER if name_or_path is None else name_or_path
    path = name_or_path if name_or_path.endswith(".safetensors") else shipped_weights_path(name_or_path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if "arch" not in meta or "arch_args" not in meta:
        raise ValueError(f"{path!r} has no 'arch'/'arch_args' metadata; it was not written by save_shipped_weights")
    classes = _arch_classes()
    if meta["arch"] not in classes:
        raise ValueError(f"{path!r} names an unknown architecture {meta['arch']!r}")
    net = classes[meta["arch"]](**json.loads(meta["arch_args"]))
    net.load_state_dict(load_file(path), strict=True)
    net.name = os.path.splitext(os.path.basename(path))[0]  # shown by the CLI demo
    return net.eval().to(device)


def load_shipped_denoiser(device: Union[str, torch.device] = "cpu") -> nn.Module:
    """The shipped sigma = 25 colour denoiser (:data:`DEFAULT_DENOISER`), in eval mode.

    Input/output: (B, 3, H, W) RGB float tensors in [0, 1] (any H, W).  Trained on
    sigma = 25 Gaussian noise only; see ``model_cards/wavelet_mambair_dn25_skimage.md``.
    """
    return load_shipped_model(DEFAULT_DENOISER, device)


@torch.no_grad()
def restore_image(net: nn.Module, image: np.ndarray, tile_size: Optional[int] = 256, overlap: int = 32) -> np.ndarray:
    """Restore a ``uint8`` (H, W, C) image (C = the network's channels) and return ``uint8``.

    Large images are processed in overlapping tiles (``tile_size=None`` disables tiling).
    The output size is the input size times the network's ``upscale`` (1 for denoisers).
    """
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) uint8 image, got {image.dtype} {image.shape}")
    param = next(net.parameters())
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(param.device, param.dtype)[None] / 255.0
    scale = int(getattr(net, "upscale", 1))
    if tile_size is None or max(image.shape[:2]) <= tile_size:
        y = forward_padded(net, x, scale)
    else:
        y = tiled_forward(net, x, tile_size=tile_size, overlap=overlap, scale=scale)
    return (y[0].clamp(0, 1).permute(1, 2, 0).float().cpu().numpy() * 255.0).round().astype(np.uint8)
