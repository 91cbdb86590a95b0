"""The shipped sigma = 25 colour denoiser: present, small, self-describing, and it denoises held-out photos."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

from vmamba_zoo.models.restoration_nets import RESTORATION_NET_CONFIGS
from vmamba_zoo.restoration import (calculate_psnr, calculate_ssim, create_restoration_model, load_image,
                                    load_shipped_denoiser, load_shipped_model, restore_image)
from vmamba_zoo.restoration.degradations import add_gaussian_noise
from vmamba_zoo.restoration.pretrained import DEFAULT_DENOISER, shipped_weights_path


def test_shipped_file_is_small_and_describes_its_architecture():
    path = shipped_weights_path()
    assert os.path.getsize(path) < 5 * 1024 * 1024
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    args = json.loads(meta["arch_args"])
    expected = {k: list(v) if isinstance(v, tuple) else v
                for k, v in RESTORATION_NET_CONFIGS[DEFAULT_DENOISER].items()}
    assert meta["arch"] == "WaveletMambaIR" and args == expected
    with pytest.raises(ValueError, match="no shipped weights"):
        load_shipped_model("mambair_sr_x4")


def test_shipped_denoiser_beats_the_noisy_input_on_held_out_photos():
    net = load_shipped_denoiser()
    assert not net.training
    clean = load_image("skimage:coffee")[100:196, 200:296]  # held out from training
    noisy = add_gaussian_noise(clean, 25, np.random.RandomState(0))
    noisy_u8 = (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)
    with torch.no_grad():
        out = net(torch.from_numpy(noisy.transpose(2, 0, 1).copy())[None])
    out_u8 = (out[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    psnr_noisy = calculate_psnr(noisy_u8, clean, channel_order="rgb")
    psnr_out = calculate_psnr(out_u8, clean, channel_order="rgb")
    assert psnr_out > psnr_noisy + 6.0, (psnr_noisy, psnr_out)
    assert calculate_ssim(out_u8, clean, channel_order="rgb") > calculate_ssim(noisy_u8, clean, channel_order="rgb")
    # the uint8 helper gives the same picture (tiled: 64 px tiles on a 96 px image)
    tiled = restore_image(net, noisy_u8, tile_size=64, overlap=16)
    assert tiled.shape == clean.shape and tiled.dtype == np.uint8
    assert calculate_psnr(tiled, clean, channel_order="rgb") > psnr_noisy + 6.0


def test_registry_builds_the_shipped_model():
    net = create_restoration_model(DEFAULT_DENOISER, pretrained=True)
    ref = load_shipped_denoiser()
    for (k, v), (k2, v2) in zip(net.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
