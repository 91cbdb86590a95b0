"""Derived-parameter cache: reused only while autograd is off and the parameters are unchanged."""
import torch
from torch import nn

from vmamba_zoo.layers.norm import LayerNorm
from vmamba_zoo.layers.param_cache import cached_cast, cached_derived


def test_cache_reuses_until_a_parameter_changes():
    lin = nn.Linear(3, 2)
    calls = []

    def make():
        calls.append(1)
        return lin.weight.to(torch.bfloat16)

    with torch.no_grad():
        first = cached_derived(lin, "w", [lin.weight], make)
        assert cached_derived(lin, "w", [lin.weight], make) is first and len(calls) == 1
        lin.weight.add_(1.0)  # in-place update (optimizer step, load_state_dict): new version
        second = cached_derived(lin, "w", [lin.weight], make)
    assert len(calls) == 2
    torch.testing.assert_close(second, lin.weight.detach().to(torch.bfloat16))
    with torch.inference_mode():
        cached_derived(lin, "w", [lin.weight], make)
    assert len(calls) == 2
    lin.weight.data = torch.zeros(2, 3)  # new storage
    with torch.no_grad():
        assert float(cached_derived(lin, "w", [lin.weight], make).abs().sum()) == 0.0


def test_cache_is_bypassed_with_autograd_on():
    lin = nn.Linear(3, 2)
    out = cached_derived(lin, "w", [lin.weight], lambda: lin.weight * 2)
    assert out.requires_grad
    out.sum().backward()
    assert lin.weight.grad is not None
    with torch.no_grad():
        cached_derived(lin, "w", [lin.weight], lambda: lin.weight * 2)
    again = cached_derived(lin, "w", [lin.weight], lambda: lin.weight * 2)
    assert again.requires_grad  # not the cached no-grad tensor


def test_layer_norm_under_bf16_autocast_follows_weight_updates():
    norm = LayerNorm(8)
    x = torch.randn(4, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = norm(x)
        norm.weight.mul_(2.0)
        after = norm(x)
    torch.testing.assert_close(after.float(), before.float() * 2, rtol=1e-2, atol=1e-2)


def test_cached_cast_keeps_none_reuses_and_follows_updates():
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        w1, b1 = cached_cast(lin, (lin.weight, lin.bias), torch.bfloat16)
        w2, _ = cached_cast(lin, (lin.weight, lin.bias), torch.bfloat16)
        assert b1 is None and w1.dtype == torch.bfloat16 and w2 is w1  # reused while unchanged
        w3, _ = cached_cast(lin, (lin.weight, lin.bias), torch.bfloat16, cache=False)
        assert w3 is not w1 and torch.equal(w3, w1)  # cache=False always recomputes
        lin.weight.mul_(2)  # an in-place update is seen
        w4, _ = cached_cast(lin, (lin.weight, lin.bias), torch.bfloat16)
        torch.testing.assert_close(w4.float(), 2 * w1.float())


def test_conv_keeps_a_channels_last_weight_for_channels_last_cpu_input():
    from vmamba_zoo.layers.conv import conv2d_keep_layout
    from vmamba_zoo.layers.param_cache import _CACHES

    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1)
    x = torch.randn(2, 9, 9, 6).permute(0, 3, 1, 2)  # a channels-last map, as a (B, H, W, C) trunk hands it
    with torch.no_grad():
        expected = conv(x.contiguous())
        got = conv2d_keep_layout(conv, x)
        torch.testing.assert_close(got, expected)
        cached = _CACHES[conv][("channels_last_weight", torch.float32)][1]
        assert cached.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous(
            memory_format=torch.channels_last)
        conv.weight.mul_(2.0)  # changed weight: the copy is made again
        torch.testing.assert_close(conv2d_keep_layout(conv, x), conv(x.contiguous()))
    y = conv2d_keep_layout(conv, x)  # autograd on: the module itself (gradients reach conv.weight)
    y.sum().backward()
    assert conv.weight.grad is not None


def test_autocast_inference_params_cast_once_and_only_without_autograd():
    from vmamba_zoo.layers.param_cache import autocast_inference_params

    lin = nn.Linear(4, 3)
    params = (lin.weight, lin.bias)
    with torch.no_grad():
        assert autocast_inference_params(lin, params, "cpu") == params  # no autocast: as they are
        assert autocast_inference_params(lin, params, "meta") == params  # no autocast there (asking raises)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            w1, b1 = autocast_inference_params(lin, params, "cpu")
            w2, b2 = autocast_inference_params(lin, params, "cpu")
            assert w1.dtype == b1.dtype == torch.bfloat16 and w2 is w1 and b2 is b1
            lin.bias.add_(1.0)
            _, b3 = autocast_inference_params(lin, params, "cpu")
            torch.testing.assert_close(b3.float(), (lin.bias.detach()).to(torch.bfloat16).float())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autograd on: the parameters themselves
        got = autocast_inference_params(lin, params, "cpu")
    assert got[0] is lin.weight and got[1] is lin.bias


def test_linear_and_conv_under_autocast_inference_equal_autocast_itself():
    """ChannelLinear and conv2d_keep_layout with cached casts give what autocast gives with autograd on
    (same casts), and the cast weights are not re-made between calls."""
    from vmamba_zoo.layers.conv import conv2d_keep_layout
    from vmamba_zoo.layers.linear import ChannelLinear
    from vmamba_zoo.layers.param_cache import _CACHES

    torch.manual_seed(0)
    lin, conv = ChannelLinear(6, 5), nn.Conv2d(6, 6, 3, padding=1, groups=6)
    x = torch.randn(2, 4, 4, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want_lin, want_conv = lin(x), conv(x.permute(0, 3, 1, 2))
        with torch.no_grad():
            got_lin, got_conv = lin(x), conv2d_keep_layout(conv, x.permute(0, 3, 1, 2))
            cached = _CACHES[lin][("cast", torch.bfloat16, "")][1][0]
            lin(x)
            assert _CACHES[lin][("cast", torch.bfloat16, "")][1][0] is cached
    assert got_lin.dtype == got_conv.dtype == torch.bfloat16
    torch.testing.assert_close(got_lin, want_lin, rtol=0, atol=0)
    torch.testing.assert_close(got_conv, want_conv, rtol=0, atol=0)


def test_ss2d_core_scan_parameters_follow_updates_in_inference():
    """The unfused core's A = -exp(A_logs), D and delta bias are reused across inference calls (cached_derived),
    yet an in-place update of any of them changes the next output exactly as a fresh module would."""
    from vmamba_zoo.layers import SS2D

    torch.manual_seed(0)
    mixer = SS2D(d_model=4, d_state=2, ssm_ratio=1.0, scan="cross", channel_first=True).eval()
    mixer.use_fused_kernel = False
    x = torch.randn(1, 4, 5, 6)
    with torch.no_grad():
        mixer(x)  # fills the cache
        for p in (mixer.A_logs, mixer.Ds, mixer.dt_projs_bias):
            p.add_(0.3)
            cached = mixer(x)
            fresh = SS2D(d_model=4, d_state=2, ssm_ratio=1.0, scan="cross", channel_first=True).eval()
            fresh.use_fused_kernel = False
            fresh.load_state_dict(mixer.state_dict())
            torch.testing.assert_close(cached, fresh(x), rtol=0, atol=0)
