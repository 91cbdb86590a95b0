"""The Triton depth-wise 3x3 conv (Triton's interpreter on CPU) equals F.conv2d + epilogue; the blocks use
it exactly for CUDA inference."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vmamba_zoo.layers.conv import depthwise3x3_fused_applies, is_depthwise3x3
from vmamba_zoo_kernels.dispatch import triton_available

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")


def _kernel():
    from vmamba_zoo_kernels.dwconv import dwconv3x3_channels_last_triton

    return dwconv3x3_channels_last_triton


@needs_triton
@pytest.mark.parametrize("hw", [(5, 11), (1, 1), (9, 8)])
@pytest.mark.parametrize("channels", [3, 70])
@pytest.mark.parametrize("epilogue", ["bias", "bias_silu", "residual", "none"])
def test_dwconv_matches_conv2d(hw, channels, epilogue):
    height, width = hw
    torch.manual_seed(0)
    x = torch.randn(2, height, width, channels, device=DEVICE).permute(0, 3, 1, 2)  # channels-last map
    weight = torch.randn(channels, 1, 3, 3, device=DEVICE)
    bias = None if epilogue == "none" else torch.randn(channels, device=DEVICE)
    want = F.conv2d(x, weight, bias, padding=1, groups=channels)
    if epilogue == "bias_silu":
        want = F.silu(want)
    if epilogue == "residual":
        want = want + x
    got = _kernel()(x, weight, bias, silu=epilogue == "bias_silu", residual=epilogue == "residual")
    assert got.shape == x.shape and got.dtype == x.dtype and got.permute(0, 2, 3, 1).is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_triton
def test_dwconv_reads_a_channel_slice_in_bf16_and_rejects_channel_first_maps():
    torch.manual_seed(1)
    wide = torch.randn(2, 6, 7, 16, device=DEVICE).to(torch.bfloat16)
    x = wide[..., :8].permute(0, 3, 1, 2)  # SS2D's conv input: one half of the in_proj output
    weight, bias = torch.randn(8, 1, 3, 3, device=DEVICE), torch.randn(8, device=DEVICE)
    want = F.silu(F.conv2d(x.float(), weight, bias, padding=1, groups=8))
    got = _kernel()(x, weight, bias, silu=True, out_dtype=torch.float32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    other_tile = _kernel()(x, weight, bias, silu=True, out_dtype=torch.float32, tiles=(16, 32, 2))  # tuning knob
    torch.testing.assert_close(other_tile, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="contiguous channels"):
        _kernel()(x.contiguous(), weight, bias)
    with pytest.raises(ValueError, match=r"\(C, 1, 3, 3\)"):
        _kernel()(x, weight[:4], bias)


def test_fused_depthwise_applies_only_to_cuda_inference_of_3x3_depthwise():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8).to(DEVICE)
    x = torch.randn(1, 5, 5, 8, device=DEVICE).permute(0, 3, 1, 2)
    assert is_depthwise3x3(conv)
    assert not is_depthwise3x3(nn.Conv2d(8, 8, 3, padding=1, groups=8, dilation=2))
    assert not is_depthwise3x3(nn.Conv2d(8, 8, 3, padding=1))
    with torch.no_grad():
        assert depthwise3x3_fused_applies(conv, x) == (DEVICE == "cuda" and triton_available())
        assert not depthwise3x3_fused_applies(conv, x.contiguous())  # channels-first memory
    assert not depthwise3x3_fused_applies(conv, x)  # autograd on


def test_spatial_mamba_inference_equals_the_autograd_path():
    """The test model in eval: the inference paths (on CUDA: fused read-out, fused convs, cached casts)
    give the output of the module path that autograd runs."""
    import timm

    import vmamba_zoo  # noqa: F401  (registers the models)

    torch.manual_seed(0)
    model = timm.create_model("test_spatial_mamba", num_classes=10).to(DEVICE).eval()
    x = torch.randn(2, 3, 64, 64, device=DEVICE)
    with torch.no_grad():
        fast = model(x)
    reference = model(x)
    assert reference.requires_grad
    torch.testing.assert_close(fast, reference.detach(), rtol=1e-4, atol=1e-4)
    if DEVICE == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            with torch.no_grad():
                fast = model(x)
            reference = model(x)
        torch.testing.assert_close(fast.float(), reference.detach().float(), rtol=3e-2, atol=3e-2)


@needs_triton
def test_spatial_mamba_cuda_inference_paths_run_under_the_interpreter(monkeypatch):
    """CI has no GPU: let the CUDA-only inference paths (fused cpe convs, SS2D's conv + SiLU, the SASF
    read-out, the gated out_norm) take CPU tensors, so the Triton interpreter runs them inside the real
    model with the real layouts (a channels-last trunk, pixel-major scan inputs), against the autograd
    path; a GPU machine runs them natively with their real gates."""
    import timm

    import vmamba_zoo  # noqa: F401  (registers the models)
    import vmamba_zoo.layers.conv as conv_mod
    import vmamba_zoo.layers.ss2d as ss2d_mod
    import vmamba_zoo.models.spatial_mamba as spatial_mod
    from vmamba_zoo.scan.sasf import SASFScan

    from vmamba_zoo.layers import SS2D

    calls = {"dwconv": 0, "readout": 0, "norm_gate": 0}
    real_fused = conv_mod.depthwise3x3_fused
    real_readout_applies = SASFScan._fused_readout_applies
    real_norm_gate = SS2D._norm_gate_fused_applies
    on_gpu = torch.cuda.is_available()  # a GPU machine runs the same paths natively, with the real gates

    def applies_on_cpu(conv, x):
        return (not torch.is_grad_enabled() and x.dim() == 4 and x.stride(1) == 1 and is_depthwise3x3(conv))

    def counted_fused(*args, **kwargs):
        calls["dwconv"] += 1
        return real_fused(*args, **kwargs)

    def counted_readout_applies(self, states, cs, xs, ds):
        if on_gpu:
            applies = real_readout_applies(self, states, cs, xs, ds)
        else:
            applies = not torch.is_grad_enabled() and states.shape[1] == 1 and states.shape[3] == 1
        calls["readout"] += applies
        return applies

    def counted_norm_gate(self, z):
        applies = real_norm_gate(self, z) if on_gpu else (not torch.is_grad_enabled() and not self.channel_first)
        calls["norm_gate"] += applies
        return applies

    for module in (ss2d_mod, spatial_mod):
        if not on_gpu:
            monkeypatch.setattr(module, "depthwise3x3_fused_applies", applies_on_cpu)
        monkeypatch.setattr(module, "depthwise3x3_fused", counted_fused)
    monkeypatch.setattr(SASFScan, "_fused_readout_applies", counted_readout_applies)
    monkeypatch.setattr(SS2D, "_norm_gate_fused_applies", counted_norm_gate)
    monkeypatch.setenv("VMAMBA_ZOO_NATIVE_CPU", "0")  # SS2D's conv then takes the (patched) Triton path too
    torch.manual_seed(0)
    device = "cuda" if on_gpu else "cpu"
    model = timm.create_model("test_spatial_mamba", num_classes=10).eval().to(device)
    x = torch.randn(2, 3, 48, 40, device=device)
    with torch.no_grad():
        fast = model(x)
    assert calls["dwconv"] > 0 and calls["readout"] > 0 and calls["norm_gate"] > 0
    reference = model(x)
    torch.testing.assert_close(fast, reference.detach(), rtol=1e-4, atol=1e-4)
