"""Image restoration: metrics with BasicSR's conventions, on-the-fly paired data, tiled
inference, a registry of restoration networks (MambaIR, Serpent-like U-Net, wavelet
MambaIR) and a small shipped denoiser.

mmengine components (dataset/model/metric registration) live in
:mod:`vmamba_zoo.mm.restoration`; this package needs only torch and numpy.
"""
from .data import PairedDegradationDataset
from .degradations import add_gaussian_noise, apply_degradations, bicubic_downsample, jpeg_compress, parse_degradations
from .losses import CharbonnierLoss, L1Loss
from .metrics import calculate_psnr, calculate_ssim, tensor_to_image, to_y_channel
from .pretrained import load_shipped_denoiser, load_shipped_model, restore_image
from .registry import create_restoration_model, list_restoration_models, load_restoration_checkpoint
from .sample_images import list_sample_images, load_image
from .tiling import tiled_forward

__all__ = [
    "PairedDegradationDataset",
    "add_gaussian_noise",
    "apply_degradations",
    "bicubic_downsample",
    "jpeg_compress",
    "parse_degradations",
    "CharbonnierLoss",
    "L1Loss",
    "calculate_psnr",
    "calculate_ssim",
    "tensor_to_image",
    "to_y_channel",
    "create_restoration_model",
    "list_restoration_models",
    "load_restoration_checkpoint",
    "list_sample_images",
    "load_image",
    "tiled_forward",
    "load_shipped_denoiser",
    "load_shipped_model",
    "restore_image",
]
