"""vmamba_zoo.layers.linear: the zoo's linear op (oneDNN's fused kernel in fp32 CPU inference) and ChannelLinear."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vmamba_zoo.layers.linear as zoo_linear
from vmamba_zoo.layers.linear import ChannelLinear, _use_onednn, linear, onednn_linear_available
from vmamba_zoo.models.vmamba import Mlp


def _reference(x, weight, bias, activation):
    out = F.linear(x, weight, bias)
    return F.gelu(out) if activation == "gelu" else out


@pytest.mark.parametrize("activation", [None, "gelu"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_f_linear_in_inference(activation, with_bias):
    torch.manual_seed(0)
    weight, bias = torch.randn(512, 256) / 16, (torch.randn(512) if with_bias else None)  # 2^17 weights
    inputs = [torch.randn(7, 256), torch.randn(2, 5, 6, 256), torch.randn(2, 6, 5, 256).transpose(1, 2)]  # strided
    with torch.inference_mode():
        for x in inputs:
            assert _use_onednn(x, weight, bias) == onednn_linear_available()
            got = linear(x, weight, bias, activation)
            assert got.shape == x.shape[:-1] + (512,)
            torch.testing.assert_close(got, _reference(x, weight, bias, activation), rtol=1e-5, atol=1e-5)
        small = weight[:, :128]  # below ONEDNN_MIN_WEIGHT: F.linear (faster there)
        assert zoo_linear.ONEDNN_MIN_WEIGHT == 1 << 17 and not _use_onednn(inputs[0][:, :128], small, bias)
        torch.testing.assert_close(linear(inputs[0][:, :128], small, bias, activation),
                                   _reference(inputs[0][:, :128], small, bias, activation))


def test_onednn_is_there_on_x86_linux_builds():
    """The CPU speed-up this module exists for: the CI machine (x86-64, torch with oneDNN) takes the route."""
    import platform

    if platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available():
        assert onednn_linear_available()


def test_linear_falls_back_where_onednn_does_not_apply():
    weight, bias = torch.randn(512, 256, requires_grad=True), torch.randn(512, requires_grad=True)
    x = torch.randn(3, 256, requires_grad=True)
    assert not _use_onednn(x, weight, bias)  # autograd on: the op has no backward
    out = linear(x, weight, bias, "gelu")
    out.sum().backward()
    assert x.grad is not None and weight.grad is not None and bias.grad is not None
    with torch.no_grad():
        assert _use_onednn(x, weight, bias) == onednn_linear_available()
        assert not _use_onednn(x.double(), weight.double(), bias.double())  # fp32 only
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not _use_onednn(x, weight, bias)
            assert linear(x, weight, bias).dtype == torch.bfloat16  # autocast's op, as F.linear
        zoo_linear.USE_ONEDNN_CPU_LINEAR = False
        try:
            assert not _use_onednn(x, weight, bias)
        finally:
            zoo_linear.USE_ONEDNN_CPU_LINEAR = True
    with pytest.raises(ValueError, match="activation"):
        linear(x, weight, bias, "relu")


def test_traced_linear_records_aten_ops():
    """Tracing (ONNX export, torch.jit.trace) must see F.linear, not the unexportable oneDNN op."""
    layer = ChannelLinear(256, 512).eval()
    with torch.no_grad():
        traced = torch.jit.trace(layer, torch.randn(2, 3, 256))
    graph = str(traced.inlined_graph)
    assert "aten::linear" in graph and "mkldnn" not in graph


def test_channel_linear_and_mlp_with_fused_gelu():
    torch.manual_seed(0)
    first = ChannelLinear(6, 10, channel_first=True).eval()
    x = torch.randn(2, 6, 5, 5)
    with torch.inference_mode():
        ref = F.gelu(F.conv2d(x, first.weight[:, :, None, None], first.bias))
        torch.testing.assert_close(first(x, activation="gelu"), ref)
        with pytest.raises(ValueError, match="activation"):
            first(x, activation="tanh")
    mlp = Mlp(256, 1024).eval()  # 2^18 weights per layer: the oneDNN route where available
    tanh_mlp = Mlp(256, 1024, act_layer=lambda: nn.GELU(approximate="tanh")).eval()
    tanh_mlp.load_state_dict(mlp.state_dict())
    x = torch.randn(2, 5, 5, 256)
    with torch.inference_mode():
        ref = mlp.fc2(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)))
        torch.testing.assert_close(mlp(x), ref, rtol=1e-5, atol=1e-5)
        ref_tanh = mlp.fc2(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias), approximate="tanh"))
        torch.testing.assert_close(tanh_mlp(x), ref_tanh, rtol=1e-5, atol=1e-5)  # not fused: its own activation
