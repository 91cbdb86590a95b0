"""Scan patterns atrous (EfficientVMamba), sasf (Spatial-Mamba) and wavelet (zoo): maps, inverses, mixer use."""
import pytest
import pywt
import torch
import torch.nn.functional as F

from vmamba_zoo.layers import SS2D
from vmamba_zoo.scan import ScanPattern, create_scan_pattern
from vmamba_zoo.scan.sasf import merge_sasf_kernels
from vmamba_zoo.scan.wavelet import wavelet_packet_matrix
from vmamba_zoo_kernels import selective_scan_ref

ODD_SIZES = [(7, 7), (15, 9), (1, 1)]
PATTERNS = ["atrous", "sasf", "wavelet"]


# ---------------------------------------------------------------- atrous
def test_atrous_route_map_4x4():
    #  0  1  2  3
    #  4  5  6  7
    #  8  9 10 11
    # 12 13 14 15
    assert create_scan_pattern("atrous", 1).route_indices(4, 4).tolist() == [
        [0, 2, 8, 10],    # (even, even) row-major
        [4, 12, 6, 14],   # (odd, even) column-major
        [1, 3, 9, 11],    # (even, odd) row-major
        [5, 13, 7, 15],   # (odd, odd) column-major
    ]


def test_atrous_route_map_3x5_pads_with_minus_one():
    # 0  1  2  3  4  |pad       padded to 4 x 6
    # 5  6  7  8  9  |pad
    # 10 11 12 13 14 |pad
    # pad ...
    pattern = create_scan_pattern("atrous", 1)
    assert pattern.seq_len(3, 5) == 6
    assert pattern.route_indices(3, 5).tolist() == [
        [0, 2, 4, 10, 12, 14],
        [5, -1, 7, -1, 9, -1],
        [1, 3, -1, 11, 13, -1],
        [6, -1, 8, -1, -1, -1],
    ]


def _official_pad_then_scan(x):
    """The official EfficientScan forward, written out: zero-pad to even, four strided sub-grids."""
    _, _, h, w = x.shape
    x = F.pad(x, (0, w % 2, 0, h % 2))
    return torch.stack([
        x[:, :, ::2, ::2].flatten(2),
        x.transpose(2, 3)[:, :, ::2, 1::2].flatten(2),
        x[:, :, ::2, 1::2].flatten(2),
        x.transpose(2, 3)[:, :, 1::2, 1::2].flatten(2),
    ], dim=1)


@pytest.mark.parametrize("hw", [(4, 4), (3, 5)] + ODD_SIZES)
def test_atrous_scan_merge(hw):
    pattern = create_scan_pattern("atrous", 3)
    x = torch.randn(2, 3, *hw)
    xs = pattern.scan(x)
    torch.testing.assert_close(xs, _official_pad_then_scan(x), rtol=0, atol=0)
    torch.testing.assert_close(xs, ScanPattern.scan(pattern, x), rtol=0, atol=0)  # == the route-index gather
    torch.testing.assert_close(pattern.merge(xs, *hw), x, rtol=0, atol=0)  # scatter, no sum
    y = torch.randn_like(xs)
    torch.testing.assert_close(pattern.merge(y, *hw), ScanPattern.merge(pattern, y, *hw), rtol=0, atol=0)


def test_atrous_padding_steps_match_official_pad_then_scan():
    """A padded pixel is a real zero-input step: with the same parameters, the mixer core on the
    -1-padded routes equals an explicit per-route scan over the zero-padded map."""
    torch.manual_seed(0)
    m = SS2D(4, d_state=3, ssm_ratio=1.0, scan="atrous", channel_first=True)
    with torch.no_grad():
        m.A_logs.uniform_(-2, 0)  # slow decay so that a dropped padding step would change later outputs
        m.dt_projs_bias.add_(2.0)
    x = torch.randn(1, 4, 5, 3)
    xs = _official_pad_then_scan(x)  # (1, 4, D, L)
    ys = []
    n, r, dim = m.d_state, m.dt_rank, m.d_inner
    for k in range(4):
        dbl = torch.einsum("cd,bdl->bcl", m.x_proj_weight[k], xs[:, k])
        dt, b, c = dbl.split([r, n, n], dim=1)
        delta = torch.einsum("dr,brl->bdl", m.dt_projs_weight[k], dt)
        rows = slice(k * dim, (k + 1) * dim)
        ys.append(selective_scan_ref(xs[:, k], delta, -torch.exp(m.A_logs[rows]), b, c, m.Ds[rows],
                                     delta_bias=m.dt_projs_bias[k], delta_softplus=True))
    expected = m.scan_pattern.merge(torch.stack(ys, 1), 5, 3)
    torch.testing.assert_close(m.forward_core(x), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ sasf
def _sasf_three_convs(pattern, h):
    out = 0
    for i, (k, d) in enumerate(zip((pattern.kernel_3, pattern.kernel_3_1, pattern.kernel_3_2), (1, 3, 5))):
        out = out + pattern.alpha[i] * F.conv2d(F.pad(h, (d,) * 4, mode="replicate"), k, dilation=d, groups=h.shape[1])
    return out


@pytest.mark.parametrize("hw", [(4, 6)] + ODD_SIZES)
def test_sasf_merged_kernel_equals_three_dilated_convs(hw):
    torch.manual_seed(0)
    pattern = create_scan_pattern("sasf", 3).double()
    with torch.no_grad():
        for p in pattern.parameters():
            p.copy_(torch.randn_like(p))
    h = torch.randn(2, 3, *hw, dtype=torch.float64)
    ref = _sasf_three_convs(pattern, h)
    torch.testing.assert_close(pattern.train().fuse_map(h), ref, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(pattern.eval().fuse_map(h), ref, rtol=1e-12, atol=1e-12)
    merged = merge_sasf_kernels((pattern.kernel_3, pattern.kernel_3_1, pattern.kernel_3_2), pattern.alpha)
    assert merged.shape == (3, 1, 11, 11)
    a = pattern.alpha
    torch.testing.assert_close(merged[:, :, 5, 5], a[0] * pattern.kernel_3[:, :, 1, 1] + a[1] * pattern.kernel_3_1[:, :, 1, 1]
                               + a[2] * pattern.kernel_3_2[:, :, 1, 1])
    torch.testing.assert_close(merged[:, :, 0, 10], a[2] * pattern.kernel_3_2[:, :, 0, 2])
    torch.testing.assert_close(merged[:, :, 8, 2], a[1] * pattern.kernel_3_1[:, :, 2, 0])


def test_sasf_eval_cache_refreshes_after_weight_changes():
    torch.manual_seed(0)
    pattern = create_scan_pattern("sasf", 2).eval()
    h = torch.randn(1, 2, 6, 6)
    with torch.no_grad():
        first = pattern.fuse_map(h)
        cached = pattern.merged_kernel()
        assert pattern.merged_kernel() is cached  # reused while the weights are unchanged
        pattern.kernel_3_1.mul_(-2.0)  # in-place change, as an optimizer step
        second = pattern.fuse_map(h)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(second, _sasf_three_convs(pattern, h))
    # a training step through an optimizer, then eval again
    pattern.train()
    opt = torch.optim.SGD(pattern.parameters(), lr=0.1)
    pattern.fuse_map(h).square().sum().backward()
    opt.step()
    pattern.eval()
    with torch.no_grad():
        torch.testing.assert_close(pattern.fuse_map(h), _sasf_three_convs(pattern, h))
        # load_state_dict copies in place
        state = {k: torch.randn_like(v) for k, v in pattern.state_dict().items()}
        pattern.load_state_dict(state)
        torch.testing.assert_close(pattern.fuse_map(h), _sasf_three_convs(pattern, h))
    # with gradients needed the merged kernel is rebuilt differentiably (not cached)
    out = pattern.fuse_map(h).sum()
    out.backward()
    assert pattern.alpha.grad is not None and pattern.kernel_3_2.grad is not None


def test_sasf_fuse_states_shapes_and_channels():
    pattern = create_scan_pattern("sasf", 3)
    h = torch.randn(2, 1, 3, 2, 4 * 5)  # (B, K=1, D, N=2, L)
    fused = pattern.fuse_states(h, 4, 5)
    assert fused.shape == h.shape
    per_n = pattern.fuse_map(h[:, 0, :, 1].reshape(2, 3, 4, 5)).reshape(2, 3, 20)
    torch.testing.assert_close(fused[:, 0, :, 1], per_n)
    with pytest.raises(ValueError, match="states"):
        pattern.fuse_states(h, 5, 5)


# --------------------------------------------------------------- wavelet
def test_wavelet_matrices_match_pywavelets():
    x = torch.randn(16, dtype=torch.float64)
    for name in ("haar", "db2", "coif1"):
        one_level = wavelet_packet_matrix(16, name, levels=1)
        ca, cd = pywt.dwt(x.numpy(), name, mode="periodization")
        torch.testing.assert_close(one_level @ x, torch.cat([torch.from_numpy(ca), torch.from_numpy(cd)]),
                                   rtol=0, atol=1e-12)
    # level 2 splits both level-1 bands again (packet): band-major a-a, a-d, d-a, d-d
    haar = wavelet_packet_matrix(8, "haar", levels=2)
    wp = pywt.WaveletPacket(x[:8].numpy(), "haar", mode="periodization", maxlevel=2)
    expected = [wp[p].data for p in ("aa", "ad", "da", "dd")]
    torch.testing.assert_close(haar @ x[:8], torch.from_numpy(__import__("numpy").concatenate(expected)),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
@pytest.mark.parametrize("hw", [(8, 8), (4, 12)] + ODD_SIZES)
def test_wavelet_transform_exactly_invertible(wavelet, hw):
    pattern = create_scan_pattern("wavelet", 3, wavelet=wavelet, levels=2)
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    coeffs = pattern.transform(x)
    hp, wp = pattern.padded_size(*hw)
    assert coeffs.shape == (2, 3, hp, wp) and hp % 4 == 0 and wp % 4 == 0
    torch.testing.assert_close(pattern.inverse_transform(coeffs, *hw), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(coeffs.square().sum(), x.square().sum(), rtol=1e-12, atol=1e-12)  # orthogonal
    windows = pattern.to_windows(coeffs)
    torch.testing.assert_close(pattern.from_windows(windows, hp, wp), coeffs, rtol=0, atol=0)
    xs = pattern.scan(x)
    assert xs.shape == (2, 4, 3, hp * wp)
    torch.testing.assert_close(pattern.merge(xs, *hw), 4 * x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("hw", [(8, 8), (4, 12)] + ODD_SIZES)
def test_wavelet_blockwise_windows_equal_the_matrix_transform(levels, hw):
    """Haar windows depend on their own pixel block only: the blockwise kernel (channels-last rows) gives
    the separable matrix transform's windows and inverts them; wider filters (db2) have no block kernel."""
    pattern = create_scan_pattern("wavelet", 3, levels=levels)
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    kernel = pattern.window_kernel(x)
    assert kernel.shape == (4 ** levels, 4 ** levels)
    windows = pattern.windows_from_pixels(x.permute(0, 2, 3, 1), kernel)  # (B, L, D)
    expected = pattern.to_windows(pattern.transform(x)).transpose(1, 2)
    torch.testing.assert_close(windows, expected, rtol=0, atol=1e-12)
    back = pattern.pixels_from_windows(windows, *hw, kernel)
    torch.testing.assert_close(back, x.permute(0, 2, 3, 1), rtol=0, atol=1e-12)
    assert create_scan_pattern("wavelet", 3, wavelet="db2").window_kernel(x) is None


def test_wavelet_routes_spelled_out():
    # 4x4 map, Haar, 2 levels: 16 subbands of 1x1, one window holding the whole spectrum
    pattern = create_scan_pattern("wavelet", 1).double()
    x = torch.arange(16.0, dtype=torch.float64).view(1, 1, 4, 4)
    xs = pattern.scan(x)[0, :, 0]
    assert xs[0].tolist() == list(range(16)) and xs[2].tolist() == list(range(15, -1, -1))
    assert xs[1, 0].item() == pytest.approx(x.sum().item() / 4)  # LL-LL: mean * 4 (orthonormal scaling)
    torch.testing.assert_close(xs[3], xs[1].flip(0))
    # 8x4 map: two windows (low-res locations (0,0) and (1,0)), each of 16 subband slots
    x = torch.zeros(1, 1, 8, 4, dtype=torch.float64)
    x[..., 4:, :] = 1.0  # only the bottom half is non-zero -> only window 1 has a non-zero LL-LL
    freq = pattern.scan(x)[0, 1, 0]
    assert freq[0].item() == pytest.approx(0.0) and freq[16].item() == pytest.approx(4.0)


def test_wavelet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown wavelet"):
        create_scan_pattern("wavelet", 2, wavelet="nope")
    with pytest.raises(ValueError, match="not orthogonal"):
        create_scan_pattern("wavelet", 2, wavelet="bior2.2")
    with pytest.raises(ValueError, match="levels"):
        create_scan_pattern("wavelet", 2, levels=0)


# ------------------------------------------------------------------ mixer
def _mixer(scan, **kw):
    torch.manual_seed(0)
    kw = {**dict(d_model=8, d_state=1 if scan == "sasf" else 2, ssm_ratio=1.0), **kw}
    return SS2D(scan=scan, **kw)


@pytest.mark.parametrize("scan", PATTERNS)
def test_mixer_parameter_layout(scan):
    m = _mixer(scan)
    k = {"atrous": 4, "sasf": 1, "wavelet": 4}[scan]
    n, r, d = m.d_state, m.dt_rank, m.d_inner
    assert m.x_proj_weight.shape == (k, r + 2 * n, d) and m.dt_projs_weight.shape == (k, d, r)
    assert m.dt_projs_bias.shape == (k, d) and m.A_logs.shape == (k * d, n) and m.Ds.shape == (k * d,)
    own = {n for n, _ in m.scan_pattern.named_parameters()}
    assert own == ({"kernel_3", "kernel_3_1", "kernel_3_2", "alpha"} if scan == "sasf" else set())


@pytest.mark.parametrize("scan", PATTERNS)
@pytest.mark.parametrize("hw", ODD_SIZES)
def test_mixer_forward_backward_odd_sizes(scan, hw):
    m = _mixer(scan)
    x = torch.randn(2, *hw, 8, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("scan", PATTERNS)
def test_mixer_channels_first_equals_channels_last(scan):
    last = _mixer(scan)
    first = _mixer(scan, channel_first=True)
    first.load_state_dict(last.state_dict())
    x = torch.randn(2, 5, 6, 8)
    torch.testing.assert_close(first(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1), last(x), rtol=1e-5, atol=1e-6)


def test_sasf_mixer_train_and_eval_agree():
    m = _mixer("sasf")
    with torch.no_grad():
        m.scan_pattern.kernel_3_1.normal_()
        m.scan_pattern.alpha.uniform_(0.5, 1.5)
    x = torch.randn(1, 5, 7, 8)
    y_train = m.train()(x)
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(x), y_train, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scan", PATTERNS)
def test_mixer_bf16_inputs_scan_in_fp32_out(scan):
    m = _mixer(scan)
    x = torch.randn(1, m.d_inner, 5, 7)
    ref = m.forward_core(x)
    y = m.forward_core(x.bfloat16())
    assert y.dtype == torch.float32  # "16-bit in, fp32 out", as for cross
    torch.testing.assert_close(y, ref, rtol=0.05, atol=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(torch.randn(1, 5, 7, 8))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
