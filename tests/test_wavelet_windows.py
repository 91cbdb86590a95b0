"""The Triton passes of the Haar wavelet windows (Triton's interpreter on CPU, natively on CUDA) equal the
PyTorch blockwise transform, and the wavelet model's CUDA inference path runs them."""
import pytest
import torch

from vmamba_zoo.scan import create_scan_pattern
from vmamba_zoo_kernels.dispatch import triton_available

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")


@needs_triton
@pytest.mark.parametrize("height,width,dim,dtype", [(8, 8, 16, torch.float32), (7, 10, 70, torch.float32),
                                                    (5, 3, 8, torch.bfloat16), (14, 12, 130, torch.float32)])
def test_source_map_and_merge_equal_the_blockwise_torch_ops(height, width, dim, dtype):
    from vmamba_zoo_kernels.wavelet_windows import haar_merge_triton, haar_source_map_triton

    torch.manual_seed(0)
    pattern = create_scan_pattern("wavelet", dim)
    x = torch.randn(2, height * width, dim, device=DEVICE).to(dtype)
    kernel = pattern.window_kernel(x.float())
    src = haar_source_map_triton(x, kernel, height, width)
    windows = pattern.windows_from_pixels(x.float().view(2, height, width, dim), kernel)
    expected = torch.cat([x.float(), windows], dim=1)
    assert src.dtype == dtype and src.shape == expected.shape
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.bfloat16 else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(src.float(), expected, **tol)
    # the merge: pixel rows plus the inverse transform of the window rows, padding cropped
    y = torch.randn(2, src.shape[1], dim, device=DEVICE)
    merged = haar_merge_triton(y, kernel, height, width)
    pixels = height * width
    expected = y[:, :pixels].reshape(2, height, width, dim) + pattern.pixels_from_windows(y[:, pixels:], height,
                                                                                        width, kernel)
    torch.testing.assert_close(merged, expected, rtol=1e-6, atol=1e-6)


@needs_triton
def test_bad_shapes_have_clear_errors():
    from vmamba_zoo_kernels.wavelet_windows import haar_merge_triton, haar_source_map_triton

    kernel = create_scan_pattern("wavelet", 4).window_kernel(torch.zeros(1))
    with pytest.raises(ValueError, match="contiguous"):
        haar_source_map_triton(torch.zeros(1, 12, 4), kernel, 4, 4)
    with pytest.raises(ValueError, match="16"):
        haar_merge_triton(torch.zeros(1, 20, 4), kernel, 4, 4)
    with pytest.raises(ValueError, match="two levels"):
        haar_source_map_triton(torch.zeros(1, 16, 4), torch.zeros(4, 4), 4, 4)


@needs_triton
def test_wave_model_inference_runs_the_window_passes(monkeypatch):
    """Inside the test model (channels-last trunk, fused core), the CUDA-only window passes (relaxed to CPU
    tensors on a CPU machine) give the PyTorch path's output."""
    import timm

    import vmamba_zoo  # noqa: F401  (registers the models)
    import vmamba_zoo.layers.fused_core as fused_core
    from vmamba_zoo.scan.wavelet import WaveletScan

    calls = []
    real = WaveletScan._windows_on_triton

    def counted(self, rows, kernel):
        applies = real(self, rows, kernel) if torch.cuda.is_available() else (
            rows.is_contiguous() and not torch.is_grad_enabled())
        calls.append(applies)
        return applies

    torch.manual_seed(0)
    model = timm.create_model("test_wave_vmamba", num_classes=5).eval().to(DEVICE)
    x = torch.randn(2, 3, 40, 48, device=DEVICE)
    monkeypatch.setattr(fused_core, "resolve_backend", lambda backend, dev: "triton")
    monkeypatch.setattr(WaveletScan, "_windows_on_triton", counted)
    with torch.no_grad():
        fast = model(x)
    assert any(calls), "the Triton window passes did not run"
    monkeypatch.setattr(WaveletScan, "_windows_on_triton", lambda self, rows, kernel: False)
    with torch.no_grad():
        reference = model(x)
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)
