"""The Triton LayerNorm equals ``F.layer_norm`` in output and gradients; the zoo's norms pick it on CUDA.

Runs the kernels through Triton's interpreter on CPU (natively on CUDA).
"""
import pytest
import torch
import torch.nn.functional as F

from vmamba_zoo.layers.norm import LayerNorm, LayerNorm2d
from vmamba_zoo_kernels.dispatch import triton_available

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(not triton_available(), reason="triton is not installed")


@pytest.mark.parametrize("channels", [96, 100, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("affine", [True, False])
def test_triton_layer_norm_matches_torch(channels, dtype, affine):
    from vmamba_zoo_kernels.layer_norm import layer_norm_triton

    torch.manual_seed(0)
    rows = 67  # not a multiple of the row tile
    x = (torch.randn(rows, channels, device=DEVICE) * 3 + 1).to(dtype).requires_grad_()
    weight = (torch.randn(channels, device=DEVICE) if affine else None)
    bias = (torch.randn(channels, device=DEVICE) if affine else None)
    params = [p.requires_grad_() for p in (weight, bias) if p is not None]
    got = layer_norm_triton(x, weight, bias, 1e-5)
    assert got.dtype == dtype and got.shape == x.shape
    ref = F.layer_norm(x.float(), (channels,), weight, bias, 1e-5)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got.float(), ref, **tol)
    grad = torch.randn_like(ref).to(dtype).float()  # what reaches the bf16 output's backward: bf16 values
    g_got = torch.autograd.grad((got.float() * grad).sum(), [x, *params])
    g_ref = torch.autograd.grad((ref * grad).sum(), [x, *params])
    assert g_got[0].dtype == dtype
    for name, a, b in zip(["x", "weight", "bias"], g_got, g_ref):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-4 if dtype == torch.float32 else 3e-2,
                                   atol=1e-4 if dtype == torch.float32 else 3e-2, msg=name)


def test_triton_layer_norm_many_programs_reduce_weight_grads():
    """More row blocks than backward programs: each program loops over several blocks; dw/db still exact."""
    from vmamba_zoo_kernels import layer_norm as ln

    torch.manual_seed(1)
    channels = 16
    rows = 64 * 1024 * 2 + 5  # > 1024 blocks of 64 rows: two or three blocks per backward program
    x = torch.randn(rows, channels, device=DEVICE, requires_grad=True)
    weight = torch.randn(channels, device=DEVICE, requires_grad=True)
    bias = torch.randn(channels, device=DEVICE, requires_grad=True)
    grad = torch.randn(rows, channels, device=DEVICE)
    got = torch.autograd.grad((ln.layer_norm_triton(x, weight, bias, 1e-5) * grad).sum(), [x, weight, bias])
    ref = torch.autograd.grad((F.layer_norm(x, (channels,), weight, bias, 1e-5) * grad).sum(), [x, weight, bias])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_triton_layer_norm_rejects_what_it_cannot_do():
    from vmamba_zoo_kernels.layer_norm import layer_norm_triton

    with pytest.raises(ValueError, match="float16/bfloat16/float32"):
        layer_norm_triton(torch.zeros(2, 3, dtype=torch.float64, device=DEVICE), None, None, 1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the zoo's norms take the Triton path on CUDA only")
def test_zoo_norms_use_triton_on_cuda_and_match_torch(monkeypatch):
    torch.manual_seed(2)
    norm = LayerNorm(96).cuda()
    norm2d = LayerNorm2d(96).cuda()
    with torch.no_grad():
        for m in (norm, norm2d):
            m.weight.normal_()
            m.bias.normal_()
    x = torch.randn(64, 96, 40, 40, device="cuda").to(memory_format=torch.channels_last)  # large: Triton path
    import vmamba_zoo.layers.norm as norm_module

    calls = []
    original = norm_module.layer_norm_triton
    monkeypatch.setattr(norm_module, "layer_norm_triton", lambda *a, **k: calls.append(1) or original(*a, **k))
    out2d = norm2d(x)
    assert calls, "a large channels-last map should take the Triton LayerNorm"
    torch.testing.assert_close(out2d, F.layer_norm(x.permute(0, 2, 3, 1), (96,), norm2d.weight, norm2d.bias)
                               .permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = norm(x.permute(0, 2, 3, 1))
    assert y.dtype == torch.bfloat16
    ref = F.layer_norm(x.permute(0, 2, 3, 1).bfloat16().float(), (96,), norm.weight, norm.bias)
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2)


def test_triton_layer_norm_compiles_fullgraph():
    from vmamba_zoo_kernels.layer_norm import layer_norm_triton

    x = torch.randn(10, 32, device=DEVICE, requires_grad=True)
    w = torch.randn(32, device=DEVICE, requires_grad=True)
    compiled = torch.compile(lambda t: layer_norm_triton(t, w, None, 1e-5), fullgraph=True, backend="aot_eager")
    y = compiled(x)
    torch.testing.assert_close(y, F.layer_norm(x, (32,), w, None, 1e-5), rtol=1e-5, atol=1e-5)
    y.sum().backward()
    assert x.grad is not None and w.grad is not None


@pytest.mark.parametrize("dtype,out_dtype", [(torch.float32, torch.float32), (torch.float32, torch.bfloat16),
                                             (torch.bfloat16, torch.bfloat16)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_silu_gate_equals_norm_times_silu(dtype, out_dtype, affine):
    """One pass of layer_norm(x) * silu(z), z one half of a channel split (evenly spaced, strided rows)."""
    from vmamba_zoo_kernels.layer_norm import layer_norm_silu_gate_triton

    torch.manual_seed(0)
    channels = 40
    x = torch.randn(2, 3, 5, channels, device=DEVICE).to(dtype)
    z = torch.randn(2, 3, 5, 2 * channels, device=DEVICE).to(dtype)[..., channels:]
    weight = torch.randn(channels, device=DEVICE) if affine else None
    bias = torch.randn(channels, device=DEVICE) if affine else None
    got = layer_norm_silu_gate_triton(x, weight, bias, 1e-5, z, out_dtype=out_dtype)
    expected = F.layer_norm(x.float(), (channels,), weight, bias, 1e-5) * F.silu(z.float())
    assert got.dtype == out_dtype
    tol = dict(rtol=1e-5, atol=1e-5) if out_dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got.float(), expected, **tol)
    uneven = torch.randn(2, 3, 6, 2 * channels, device=DEVICE).to(dtype)[:, :, :5, channels:]  # x's shape
    with pytest.raises(ValueError, match="evenly spaced rows"):
        layer_norm_silu_gate_triton(x, weight, bias, 1e-5, uneven)
