"""PSNR / SSIM against independently written formulas (numpy, scikit-image)."""
import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from vmamba_zoo.restoration.metrics import (calculate_psnr, calculate_ssim, gaussian_window_1d, tensor_to_image,
                                            to_y_channel)


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(123)
    gt = rng.integers(0, 256, (45, 38, 3)).astype(np.uint8)
    # smooth it a little so SSIM is not trivial
    gt = ((gt.astype(np.float64) + np.roll(gt, 1, 0) + np.roll(gt, 1, 1)) / 3).round().astype(np.uint8)
    noisy = np.clip(gt.astype(np.int64) + rng.integers(-25, 26, gt.shape), 0, 255).astype(np.uint8)
    return gt, noisy


def _psnr_formula(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / mse)


def _y_formula_rgb(img):
    """MATLAB rgb2ycbcr luma on [0, 255] RGB input, in float64: 16 + (65.481 R + 128.553 G + 24.966 B) / 255."""
    x = img.astype(np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def _skimage_ssim(a, b):
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    if a.ndim == 2:
        return structural_similarity(a.astype(np.float64), b.astype(np.float64), **kw)
    return structural_similarity(a.astype(np.float64), b.astype(np.float64), channel_axis=2, **kw)


def test_psnr_rgb_matches_formula(pair):
    gt, noisy = pair
    assert calculate_psnr(noisy, gt) == pytest.approx(_psnr_formula(noisy, gt), abs=1e-10)
    # crop_border removes that many pixels on every side
    c = 3
    expected = _psnr_formula(noisy[c:-c, c:-c], gt[c:-c, c:-c])
    assert calculate_psnr(noisy, gt, crop_border=c) == pytest.approx(expected, abs=1e-10)
    # CHW input order
    assert calculate_psnr(noisy.transpose(2, 0, 1), gt.transpose(2, 0, 1), input_order="CHW") == pytest.approx(
        _psnr_formula(noisy, gt), abs=1e-10)


def test_psnr_identical_is_inf(pair):
    gt, _ = pair
    assert calculate_psnr(gt, gt) == float("inf")


def test_y_channel_matches_bt601_formula(pair):
    gt, _ = pair
    y_rgb = to_y_channel(gt, channel_order="rgb")[..., 0]
    y_bgr = to_y_channel(gt[..., ::-1], channel_order="bgr")[..., 0]
    np.testing.assert_array_equal(y_rgb, y_bgr)
    # BasicSR rounds through float32: equal to the float64 formula to float32 precision
    np.testing.assert_allclose(y_rgb, _y_formula_rgb(gt), rtol=0, atol=3e-5)
    assert y_rgb.min() >= 16 - 1e-4 and y_rgb.max() <= 235 + 1e-4
    # grey images pass through unchanged
    np.testing.assert_array_equal(to_y_channel(gt[..., :1])[..., 0], gt[..., 0].astype(np.float64))


def test_psnr_y_channel_with_crop_matches_formula(pair):
    gt, noisy = pair
    c = 4  # SR x4 protocol: crop = scale, Y channel
    a, b = _y_formula_rgb(noisy[c:-c, c:-c]), _y_formula_rgb(gt[c:-c, c:-c])
    expected = 10 * math.log10(255.0**2 / np.mean((a - b) ** 2))
    got = calculate_psnr(noisy, gt, crop_border=c, test_y_channel=True, channel_order="rgb")
    assert got == pytest.approx(expected, abs=1e-4)
    # the same arrays in BGR order with BasicSR's default channel order
    got_bgr = calculate_psnr(noisy[..., ::-1], gt[..., ::-1], crop_border=c, test_y_channel=True)
    assert got_bgr == got
    # and RGB weights applied to BGR data would give a different number (the order matters)
    assert abs(calculate_psnr(noisy, gt, crop_border=c, test_y_channel=True, channel_order="bgr") - got) > 1e-3


def test_gaussian_window_matches_definition():
    g = gaussian_window_1d(11, 1.5)
    x = np.arange(-5, 6)
    ref = np.exp(-x**2 / (2 * 1.5**2))
    np.testing.assert_allclose(g, ref / ref.sum(), rtol=1e-15)


def test_ssim_matches_skimage_gaussian(pair):
    gt, noisy = pair
    # skimage: 11x11 Gaussian (truncate 3.5 * 1.5 -> radius 5), population covariance, and it
    # averages the SSIM map after cropping (11 - 1) / 2 = 5 pixels: BasicSR's 'valid' filtering.
    assert calculate_ssim(noisy, gt) == pytest.approx(_skimage_ssim(noisy, gt), abs=1e-10)
    for c in range(3):
        assert calculate_ssim(noisy[..., c], gt[..., c]) == pytest.approx(
            _skimage_ssim(noisy[..., c], gt[..., c]), abs=1e-10)
    c = 2
    assert calculate_ssim(noisy, gt, crop_border=c) == pytest.approx(
        _skimage_ssim(noisy[c:-c, c:-c], gt[c:-c, c:-c]), abs=1e-10)


def test_ssim_y_channel_matches_skimage_on_formula_y(pair):
    gt, noisy = pair
    expected = _skimage_ssim(_y_formula_rgb(noisy), _y_formula_rgb(gt))
    got = calculate_ssim(noisy, gt, test_y_channel=True, channel_order="rgb")
    assert got == pytest.approx(expected, abs=1e-6)


def test_ssim_matches_explicit_window_loop():
    """SSIM written out window by window: mean over the centres where the 11x11 window fits."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 14)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    x = np.arange(-5, 6)
    g = np.exp(-x**2 / 4.5)
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(5, a.shape[0] - 5):
        for j in range(5, a.shape[1] - 5):
            pa, pb = a[i - 5:i + 6, j - 5:j + 6], b[i - 5:i + 6, j - 5:j + 6]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
            cov = (w * pa * pb).sum() - ma * mb
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    assert calculate_ssim(a, b) == pytest.approx(np.mean(vals), abs=1e-12)


def test_bad_inputs_raise():
    a = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="shapes differ"):
        calculate_psnr(a, a[:10])
    with pytest.raises(ValueError, match="crop_border"):
        calculate_psnr(a, a, crop_border=10)
    with pytest.raises(ValueError, match="input_order"):
        calculate_ssim(a, a, input_order="NHWC")
    with pytest.raises(ValueError, match="at least 11"):
        calculate_ssim(a[:10, :10], a[:10, :10])


def test_tensor_to_image_rounds_like_basicsr():
    t = torch.tensor([[[-0.2, 0.0, 0.5 / 255, 1.5 / 255], [0.5, 1.0, 1.2, 0.9980]]])
    img = tensor_to_image(t)
    assert img.dtype == np.uint8 and img.shape == (2, 4, 1)
    expected = (np.clip(t.numpy(), 0, 1) * 255.0).round().astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(img, expected)
    assert img[0, 0, 0] == 0 and img[1, 2, 0] == 255
