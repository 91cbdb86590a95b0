"""The fused SASF read-out (Triton; the interpreter on CPU) equals Spatial-Mamba's convolutions + C + D,
and the SASF pattern uses it exactly where no gradient is needed on CUDA."""
import pytest
import torch

from vmamba_zoo.scan import create_scan_pattern
from vmamba_zoo.scan.base import ScanPattern
from vmamba_zoo.scan.sasf import SASF_DILATIONS
from vmamba_zoo_kernels.dispatch import triton_available
from vmamba_zoo_kernels.reference import sasf_readout_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")


def _pattern(dim, seed=0):
    torch.manual_seed(seed)
    pattern = create_scan_pattern("sasf", dim).to(DEVICE)
    with torch.no_grad():  # non-trivial kernels and mixing weights (the init is all ones)
        for k in (pattern.kernel_3, pattern.kernel_3_1, pattern.kernel_3_2):
            k.copy_(torch.randn_like(k))
        pattern.alpha.copy_(torch.tensor([0.7, -1.3, 0.4]))
    return pattern


def _inputs(batch, dim, height, width, u_dtype=torch.float32):
    length = height * width
    states = torch.randn(batch, 1, dim, 1, length, device=DEVICE)
    cs = torch.randn(batch, 1, 1, length, device=DEVICE)
    xs = torch.randn(batch, 1, dim, length, device=DEVICE).to(u_dtype)
    ds = torch.randn(dim, device=DEVICE)
    return states, cs, xs, ds


def _kernel():
    from vmamba_zoo_kernels.state_fusion import sasf_readout_triton

    return sasf_readout_triton


def _module_read_out(pattern, states, cs, xs, ds, height, width):
    """The convolution path (the base class's read-out), whatever the device."""
    return ScanPattern.read_out_states(pattern, states, cs, xs, ds, height, width)


@needs_triton
@pytest.mark.parametrize("hw", [(7, 9), (14, 14), (3, 2), (1, 6)])
@pytest.mark.parametrize("dim", [5, 40])
@pytest.mark.parametrize("tiles", [None, (16, 64, True), (128, 16, False)])
def test_readout_kernel_matches_convolutions(hw, dim, tiles):
    """Sizes below/above the tiles, maps smaller than the largest dilation (every tap clamped)."""
    height, width = hw
    pattern = _pattern(dim)
    states, cs, xs, ds = _inputs(2, dim, height, width)
    with torch.no_grad():
        want = _module_read_out(pattern, states, cs, xs, ds, height, width)
        taps = pattern.readout_taps()
        got = _kernel()(states.reshape(2, dim, -1), cs.reshape(2, -1), xs.reshape(2, dim, -1), ds, taps,
                        height, width, SASF_DILATIONS, tiles=tiles)
        ref = sasf_readout_ref(states.reshape(2, dim, -1), cs.reshape(2, -1), xs.reshape(2, dim, -1), ds,
                                     taps, height, width, SASF_DILATIONS)
    assert got.shape == (2, dim, height * width) and got.dtype == torch.float32
    assert got.transpose(1, 2).is_contiguous()  # written channels-last
    torch.testing.assert_close(got, want[:, 0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ref, want[:, 0], rtol=1e-5, atol=1e-4)


@needs_triton
def test_readout_kernel_reads_bf16_inputs_and_any_strides():
    """bf16 input, h as a slice of a wider tensor, u and C pixel-major (what a channels-last trunk gives)."""
    height, width, dim = 6, 5, 8
    pattern = _pattern(dim, seed=1)
    states, cs, xs, ds = _inputs(3, dim, height, width, u_dtype=torch.bfloat16)
    wide = torch.randn(3, height * width, 2 * dim, device=DEVICE).transpose(1, 2)  # pixel-major, twice as wide
    wide[:, :dim] = states.reshape(3, dim, -1)
    with torch.no_grad():
        want = _module_read_out(pattern, states, cs, xs, ds, height, width)[:, 0]
        u_pixel_major = xs.reshape(3, dim, -1).transpose(1, 2).contiguous().transpose(1, 2)
        c_strided = torch.stack([cs.reshape(3, -1)] * 2, dim=-1)[..., 1]
        assert u_pixel_major.stride(-1) == dim and c_strided.stride(-1) == 2
        got = _kernel()(wide[:, :dim], c_strided, u_pixel_major, ds,
                        pattern.readout_taps(), height, width, SASF_DILATIONS)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


@needs_triton
def test_readout_kernel_rejects_what_it_cannot_do():
    h = torch.randn(1, 4, 12, device=DEVICE)
    taps = torch.randn(4, 3, 3, 3, device=DEVICE)
    c, d = torch.randn(1, 12, device=DEVICE), torch.randn(4, device=DEVICE)
    with pytest.raises(ValueError, match="do not fit a 3x5 map"):
        _kernel()(h, c, h, d, taps, 3, 5, SASF_DILATIONS)
    with pytest.raises(ValueError, match="three dilations"):
        _kernel()(h, c, h, d, taps, 3, 4, (1, 3))


def test_readout_taps_cached_until_the_weights_change():
    pattern = _pattern(4)
    with torch.no_grad():
        taps = pattern.readout_taps()
        assert pattern.readout_taps() is taps
        torch.testing.assert_close(taps[:, 1], pattern.alpha[1] * pattern.kernel_3_1[:, 0])
        pattern.kernel_3_2.mul_(2.0)  # in place: the version counter changes
        assert pattern.readout_taps() is not taps
    assert pattern.readout_taps().requires_grad  # rebuilt differentiably when gradients are needed


@needs_triton
def test_pattern_uses_the_kernel_only_without_gradients_on_cuda(monkeypatch):
    """On CUDA the no-grad read-out runs the kernel and equals the convolutions; with gradients, on the
    CPU or with ``use_fused_readout = False`` it is the convolution path (spied)."""
    import vmamba_zoo_kernels.state_fusion as state_fusion

    calls = []
    real = state_fusion.sasf_readout_triton
    monkeypatch.setattr(state_fusion, "sasf_readout_triton", lambda *a, **k: calls.append(1) or real(*a, **k))
    height, width, dim = 5, 7, 6
    pattern = _pattern(dim, seed=2)
    states, cs, xs, ds = _inputs(2, dim, height, width)
    with torch.no_grad():
        got = pattern.read_out_states(states, cs, xs, ds, height, width)
        want = _module_read_out(pattern, states, cs, xs, ds, height, width)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert len(calls) == int(DEVICE == "cuda" and triton_available())
    calls.clear()
    states.requires_grad_()
    pattern.read_out_states(states, cs, xs, ds, height, width).sum().backward()
    assert states.grad is not None and not calls
    pattern.use_fused_readout = False
    with torch.no_grad():
        pattern.read_out_states(states, cs, xs, ds, height, width)
    assert not calls


@needs_triton
def test_spatial_mamba_eval_same_with_and_without_the_fused_readout():
    """The whole test model in eval under no_grad (on CUDA: the kernel on the channels-last trunk's
    pixel-major maps) gives the convolution path's output."""
    import timm

    import vmamba_zoo  # noqa: F401  (registers the models)
    from vmamba_zoo.scan.sasf import SASFScan

    torch.manual_seed(0)
    model = timm.create_model("test_spatial_mamba", num_classes=10).to(DEVICE).eval()
    x = torch.randn(2, 3, 64, 64, device=DEVICE)
    with torch.no_grad():
        fused = model(x)
        try:
            SASFScan.use_fused_readout = False
            unfused = model(x)
        finally:
            SASFScan.use_fused_readout = True
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-4)
