"""The native CPU kernel (kernels/csrc/scan_cpu.c): same results as the reference, picked by "auto" only
where no autograd graph is needed, and a clean fallback to the chunked path when it cannot be built."""
import logging

import pytest
import timm
import torch

import vmamba_zoo  # noqa: F401  (registers the models)
from vmamba_zoo.layers import SS2D
from vmamba_zoo.layers.fused_core import can_fuse, ss2d_core_fused
from vmamba_zoo_kernels import native_cpu, selective_scan, selective_scan_ref, selective_scan_routes
from vmamba_zoo_kernels.routes import gather_routes, scatter_routes



def test_native_kernel_builds_here():
    """The machines this suite runs on have a C compiler (CI builds mmcv from source): the kernel must build
    (the fallback without one is tested below)."""
    assert native_cpu.native_library() is not None, "the native CPU kernel did not build (see the logged warning)"


def _scan_inputs(batch, dim, groups, n_state, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(u=torch.randn(batch, dim, length, generator=g),
                delta=torch.randn(batch, dim, length, generator=g),
                A=-torch.rand(dim, n_state, generator=g) * 2 - 0.05,
                B=torch.randn(batch, groups, n_state, length, generator=g),
                C=torch.randn(batch, groups, n_state, length, generator=g),
                D=torch.randn(dim, generator=g), z=torch.randn(batch, dim, length, generator=g),
                delta_bias=torch.randn(dim, generator=g) * 0.5,
                initial_state=torch.randn(batch, dim, n_state, generator=g))


def test_native_routes_refuse_an_index_outside_the_map():
    """A bad route map (called directly, unchecked) raises instead of reading or writing out of bounds."""
    route_index = torch.tensor([[0, 1, 2, 9]])
    x, delta = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    A, B, C = -torch.rand(3, 1), torch.randn(1, 1, 1, 4), torch.randn(1, 1, 1, 4)
    with pytest.raises(ValueError, match="outside"):
        native_cpu.scan_routes_native(x, delta, A, B, C, None, None, True, route_index)
    with pytest.raises(ValueError, match="outside"):
        native_cpu.scan_routes_native(x, delta, A, B, C, None, None, True, torch.tensor([[0, -2, 1, 2]]))


@pytest.mark.parametrize("n_state,reverse", [(1, False), (4, True)])
def test_native_states_match_reference(n_state, reverse):
    """return_states (structure-aware state fusion): the states h (batch, dim, N, L) and the final state."""
    x = _scan_inputs(2, 8, 2, n_state, 45, seed=4)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    kw = dict(initial_state=x["initial_state"], reverse=reverse, return_states=True)
    states, last = selective_scan(*args, True, True, backend="native", **kw)
    ref_states, ref_last = selective_scan_ref(*(a.double() for a in args), True, True,
                                              initial_state=x["initial_state"].double(), reverse=reverse,
                                              return_states=True)
    assert states.shape == (2, 8, n_state, 45) and states.dtype == torch.float32
    torch.testing.assert_close(states.double(), ref_states, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_state,groups,length", [(1, 4, 97), (16, 2, 130), (3, 1, 1)])
@pytest.mark.parametrize("softplus,reverse,with_optional", [(True, False, True), (True, True, False),
                                                            (False, False, True)])
def test_native_rows_match_reference(n_state, groups, length, softplus, reverse, with_optional):
    x = _scan_inputs(2, 8, groups, n_state, length)
    if not softplus:
        x["delta"] = x["delta"].abs() * 0.3  # a positive step without softplus (else the state grows
        x["delta_bias"] = x["delta_bias"].abs()  # exponentially and overflows float32)
    if not with_optional:
        x.update(D=None, z=None, delta_bias=None, initial_state=None)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    kw = dict(initial_state=x["initial_state"], reverse=reverse)
    out, last = selective_scan(*args, softplus, True, backend="native", **kw)
    ref_out, ref_last = selective_scan_ref(*(a.double() if a is not None else None for a in args), softplus, True,
                                           initial_state=None if kw["initial_state"] is None else
                                           kw["initial_state"].double(), reverse=reverse)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-5, atol=1e-5)


def test_native_rows_dtypes_and_layouts():
    """16-bit inputs compute in float32 (out_dtype honoured), 3-D B/C mean one group, strided u is read."""
    x = _scan_inputs(1, 6, 1, 2, 40, seed=1)
    u_strided = x["u"].transpose(1, 2).contiguous().transpose(1, 2)
    B3, C3 = x["B"][:, 0], x["C"][:, 0]
    got = selective_scan(u_strided, x["delta"], x["A"], B3, C3, x["D"], None, x["delta_bias"], True,
                         backend="native")
    ref = selective_scan_ref(x["u"], x["delta"], x["A"], B3, C3, x["D"], None, x["delta_bias"], True)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    half = selective_scan(x["u"].bfloat16(), x["delta"].bfloat16(), x["A"], B3, C3, x["D"], None, x["delta_bias"],
                          True, backend="native", out_dtype=torch.float32)
    ref16 = selective_scan_ref(x["u"].bfloat16().double(), x["delta"].bfloat16().double(), x["A"].double(),
                               B3.double(), C3.double(), x["D"].double(), None, x["delta_bias"].double(), True)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.double(), ref16, rtol=1e-5, atol=1e-5)
    assert selective_scan(x["u"].half(), x["delta"].half(), x["A"], B3, C3, backend="native").dtype == torch.half


def test_native_softplus_and_exp_extremes():
    """Huge |Δ| (softplus threshold, decays flushed to 0), NaN propagates as in the reference."""
    x = _scan_inputs(1, 4, 1, 2, 16, seed=2)
    delta = torch.tensor([-200.0, -30.0, -5.0, -1e-3, 0.0, 1e-3, 5.0, 19.9, 20.0, 20.1, 30.0, 90.0, -90.0, 3.0,
                          -3.0, 0.5]).expand(1, 4, 16).contiguous()
    args = [x["u"], delta, x["A"] * 5, x["B"], x["C"], x["D"], None, None]
    got = selective_scan(*args, True, backend="native")
    ref = selective_scan_ref(*(a.double() if a is not None else None for a in args), True)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    delta_nan = delta.clone()
    delta_nan[0, 1, 3] = float("nan")
    got = selective_scan(x["u"], delta_nan, *args[2:], True, backend="native")
    assert torch.isnan(got[0, 1, 3:]).all() and torch.isfinite(got[0, 0]).all()


def _route_maps(height, width):
    pixels = height * width
    rows = torch.arange(pixels)
    cols = rows.view(height, width).t().reshape(-1)
    padded = torch.cat([rows[3:], torch.full((3,), -1)])  # a route with padding steps (reads zeros, decays)
    return torch.stack([rows, cols.flip(0), padded, rows.flip(0)])


@pytest.mark.parametrize("n_state,pixel_major,batch", [(1, True, 3), (3, False, 1), (1, False, 2)])
def test_native_routes_match_gather_scan_scatter(n_state, pixel_major, batch):
    height, width, dim = 5, 7, 40  # 40 channels: split across threads in blocks of 16 and a remainder
    route_index = _route_maps(height, width)
    routes, pixels = route_index.shape[0], height * width
    g = torch.Generator().manual_seed(3)
    if pixel_major:  # the fused core's layout: (batch, P, C) tensors seen as (batch, C, P)
        x = torch.randn(batch, pixels, dim, generator=g).transpose(1, 2)
        delta = torch.randn(batch, pixels, routes * dim, generator=g).transpose(1, 2)
    else:
        x = torch.randn(batch, dim, pixels, generator=g)
        delta = torch.randn(batch, routes * dim, pixels, generator=g)
    A = -torch.rand(routes * dim, n_state, generator=g) - 0.1
    B = torch.randn(batch, pixels, routes, n_state, generator=g).permute(0, 2, 3, 1)  # strided, as x_proj's
    C = torch.randn(batch, routes, n_state, pixels, generator=g)
    D, bias = torch.randn(routes * dim, generator=g), torch.randn(routes * dim, generator=g) * 0.3
    got = selective_scan_routes(x, delta, A, B, C, D, bias, True, route_index=route_index, backend="native")
    u = gather_routes(x.double(), route_index).reshape(batch, routes * dim, -1)
    dt = gather_routes(delta.double().reshape(batch, routes, dim, pixels), route_index).reshape(batch, routes * dim, -1)
    ys = selective_scan_ref(u, dt, A.double(), gather_routes(B.double(), route_index),
                            gather_routes(C.double(), route_index), D.double(), None, bias.double(), True)
    expected = scatter_routes(ys.view(batch, routes, dim, -1), route_index, pixels)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    for threads in (1, 3):  # other work splits (whole batches, routes per thread summed at the end)
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            again = selective_scan_routes(x, delta, A, B, C, D, bias, True, route_index=route_index, backend="native")
        finally:
            torch.set_num_threads(previous)
        torch.testing.assert_close(again, got, rtol=1e-6, atol=1e-6)  # the same up to summation order


def test_auto_runs_native_only_without_an_autograd_graph(monkeypatch):
    calls = []
    real = native_cpu.scan_rows_native
    import vmamba_zoo_kernels.dispatch as dispatch

    monkeypatch.setattr(dispatch, "scan_rows_native", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = _scan_inputs(1, 4, 1, 1, 12)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D")]
    with torch.no_grad():
        selective_scan(*[a.requires_grad_() for a in args], backend="auto")
    assert calls == [1]
    y = selective_scan(*args, backend="auto")  # grad needed: the chunked (differentiable) path
    assert calls == [1] and y.requires_grad
    y.sum().backward()
    assert args[0].grad is not None
    selective_scan(*[a.detach() for a in args], backend="auto", return_states=True)  # no grad needed: native
    assert calls == [1, 1]
    with pytest.raises(ValueError, match="forward only"):
        selective_scan(*args, backend="native")


@pytest.mark.parametrize("scan", ["cross", "atrous", "bi", "wavelet"])
def test_fused_core_on_cpu_matches_forward_core(scan):
    torch.manual_seed(0)
    mixer = SS2D(d_model=8, d_state=2, ssm_ratio=2.0, scan=scan, channel_first=True)
    with torch.no_grad():
        for p in (mixer.Ds, mixer.dt_projs_bias):
            p.add_(torch.randn_like(p) * 0.2)
        x = torch.randn(2, mixer.d_inner, 6, 9)
        assert can_fuse(mixer, x)
        torch.testing.assert_close(ss2d_core_fused(mixer, x), mixer.forward_core(x), rtol=1e-5, atol=1e-5)
    assert not can_fuse(mixer, x)  # grad enabled and the parameters require grad: the differentiable path


@pytest.mark.parametrize("scan", ["cross", "wavelet"])
def test_fused_core_on_cpu_under_bf16_autocast(scan):
    """Under CPU bf16 autocast the native core still hands the C kernel fp32 data (the per-route dt GEMM is an
    autocast op: its bf16 output was once read as fp32, giving NaN), and agrees with the unfused core."""
    torch.manual_seed(0)
    mixer = SS2D(d_model=8, d_state=1, ssm_ratio=2.0, scan=scan, channel_first=True)
    x = torch.randn(4, mixer.d_inner, 5, 6)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert can_fuse(mixer, x)
        fused = ss2d_core_fused(mixer, x)
        reference = mixer.forward_core(x)
    assert torch.isfinite(fused).all()
    torch.testing.assert_close(fused.float(), reference.float(), rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("name", ["test_vmamba", "test_efficient_vmamba", "test_spatial_mamba", "test_wave_vmamba"])
def test_model_inference_native_equals_chunked(monkeypatch, name):
    """Gather patterns and the wavelet pattern (fused core), state fusion (return_states)."""
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    image = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        native = model(image)
        monkeypatch.setenv("VMAMBA_ZOO_NATIVE_CPU", "0")
        chunked = model(image)
    torch.testing.assert_close(native, chunked, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels_last,with_bias,silu", [(True, True, True), (False, False, False),
                                                         (True, False, True)])
def test_native_depthwise_conv_matches_torch(channels_last, with_bias, silu):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(21, 21, 3, padding=1, groups=21, bias=with_bias)  # 21: not a multiple of 16
    x = torch.randn(2, 5, 7, 21).permute(0, 3, 1, 2) if channels_last else torch.randn(2, 21, 5, 7)
    with torch.no_grad():
        expected = conv(x)
        expected = torch.nn.functional.silu(expected) if silu else expected
        got = native_cpu.dwconv3x3_native(x, conv.weight, conv.bias, silu=silu)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="weight must be"):
        native_cpu.dwconv3x3_native(x, torch.zeros(21, 1, 5, 5))


def test_unbuildable_kernel_falls_back_to_the_chunked_path(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("VMAMBA_ZOO_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    monkeypatch.setattr(native_cpu, "_find_compiler", lambda: "/bin/false")
    native_cpu._load_library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="vmamba_zoo_kernels.native_cpu"):
            assert native_cpu.native_library() is None
        assert "could not be built" in caplog.text
        x = _scan_inputs(1, 4, 1, 1, 12)
        args = [x[k] for k in ("u", "delta", "A", "B", "C")]
        torch.testing.assert_close(selective_scan(*args, backend="auto"), selective_scan_ref(*args))
        with pytest.raises(RuntimeError, match="C compiler"):
            selective_scan(*args, backend="native")
    finally:
        native_cpu._load_library.cache_clear()


def test_unwritable_cache_falls_back_with_a_warning(monkeypatch, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("VMAMBA_ZOO_CACHE_DIR", str(blocker / "cache"))  # below a file: cannot be created
    native_cpu._load_library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="vmamba_zoo_kernels.native_cpu"):
            assert native_cpu.native_library() is None
        assert "VMAMBA_ZOO_CACHE_DIR" in caplog.text
    finally:
        native_cpu._load_library.cache_clear()


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("VMAMBA_ZOO_NATIVE_CPU", "0")
    assert native_cpu.native_library() is None and not native_cpu.native_usable(torch.zeros(1))
