"""The fused gather-scan-merge path equals the unfused (materialising) path, in output and gradients.

Runs the Triton kernel through Triton's interpreter on CPU (natively on CUDA).
"""
import pytest
import torch

from vmamba_zoo.layers import SS2D
from vmamba_zoo.layers.fused_core import ss2d_core_fused
from vmamba_zoo.scan import get_scan_pattern_cls, list_scan_patterns
from vmamba_zoo_kernels import selective_scan_routes
from vmamba_zoo_kernels.dispatch import triton_available

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(not triton_available(), reason="triton is not installed")

GATHER_PATTERNS = [name for name in list_scan_patterns() if get_scan_pattern_cls(name).supports_fused_core()]


def test_fusable_patterns():
    """Gather patterns without state fusion, and the wavelet pattern (its routes read a source map of pixels
    and window-ordered coefficients)."""
    assert {"cross", "uni", "bi", "atrous", "wavelet"} <= set(GATHER_PATTERNS)
    assert "sasf" not in GATHER_PATTERNS


@pytest.mark.parametrize("scan", GATHER_PATTERNS)
@pytest.mark.parametrize("height,width,d_state,channels_last,sequential", [
    (9, 8, 1, True, False), (5, 3, 4, False, False), (5, 6, 4, True, True)])
def test_fused_core_matches_unfused(monkeypatch, scan, height, width, d_state, channels_last, sequential):
    """``sequential``: the forward walks the routes step by step (the kernel wide states get)."""
    monkeypatch.setenv("VMAMBA_ZOO_SCAN_SEQ", "1" if sequential else "0")
    torch.manual_seed(0)
    mixer = SS2D(d_model=4, d_state=d_state, ssm_ratio=2.0, scan=scan, channel_first=True).to(DEVICE)
    with torch.no_grad():  # non-trivial parameters
        for p in (mixer.Ds, mixer.dt_projs_bias):
            p.add_(torch.randn_like(p) * 0.2)
    x = torch.randn(2, mixer.d_inner, height, width, device=DEVICE)
    if channels_last:  # the layout a channels-last trunk hands the core (pixel-major reads)
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    expected = mixer.forward_core(x).float()
    got = ss2d_core_fused(mixer, x, backend="triton")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    if get_scan_pattern_cls(scan).is_gather:  # the merged map keeps the input's layout (wavelet: its merge's)
        assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    grad = torch.randn_like(expected)
    params = [x, mixer.x_proj_weight, mixer.dt_projs_weight, mixer.dt_projs_bias, mixer.A_logs, mixer.Ds]
    g_ref = torch.autograd.grad((expected * grad).sum(), params)
    g_fused = torch.autograd.grad((got * grad).sum(), params)
    for name, a, b in zip(["x", "x_proj", "dt_projs", "dt_bias", "A_logs", "Ds"], g_fused, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("sequential", [False, True])
def test_padding_steps_decay_but_read_nothing(monkeypatch, sequential):
    """Index -1 (padding) reads zeros yet remains a step: fused and unfused agree on the padded routes
    (both forwards: chunked and step by step)."""
    monkeypatch.setenv("VMAMBA_ZOO_SCAN_SEQ", "1" if sequential else "0")
    torch.manual_seed(1)
    pixels, dim, routes, n = 6, 2, 2, 1
    route_index = torch.tensor([[0, -1, 1, 2, -1, 3], [5, 4, -1, -1, -1, -1]])
    x = torch.randn(1, dim, pixels, device=DEVICE)
    delta = torch.randn(1, routes * dim, pixels, device=DEVICE)
    A = -torch.rand(routes * dim, n, device=DEVICE) - 0.5
    B = torch.randn(1, routes, n, pixels, device=DEVICE)
    C = torch.randn(1, routes, n, pixels, device=DEVICE)
    bias = torch.randn(routes * dim, device=DEVICE)
    fused = selective_scan_routes(x, delta, A, B, C, None, bias, True, route_index=route_index, backend="triton",
                                  fused=True)
    unfused = selective_scan_routes(x, delta, A, B, C, None, bias, True, route_index=route_index, backend="cpu",
                                    fused=False)
    torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=1e-6)
    # a decaying padding step changes the result relative to skipping it
    compact = torch.tensor([[0, 1, 2, 3], [5, 4, -1, -1]])
    skipped = selective_scan_routes(x, delta, A, B, C, None, bias, True, route_index=compact, backend="cpu",
                                    fused=False)
    assert not torch.allclose(skipped[..., 1:4], unfused[..., 1:4])


def test_route_index_errors():
    x = torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match=r"entries must be -1 \(padding\) or pixels in \[0, 4\)"):
        selective_scan_routes(x, torch.zeros(1, 2, 4), torch.zeros(2, 1), torch.zeros(1, 1, 1, 4),
                              torch.zeros(1, 1, 1, 4), route_index=torch.tensor([[0, 1, 2, 4]]))
    with pytest.raises(ValueError, match="route 0 visits a pixel more than once"):
        selective_scan_routes(x, torch.zeros(1, 2, 4), torch.zeros(2, 1), torch.zeros(1, 1, 1, 4),
                              torch.zeros(1, 1, 1, 4), route_index=torch.tensor([[0, 1, 1, -1]]))
    with pytest.raises(ValueError, match=r"delta must be \(batch, K\*D, P\)"):
        selective_scan_routes(x, torch.zeros(1, 3, 4), torch.zeros(2, 1), torch.zeros(1, 1, 1, 4),
                              torch.zeros(1, 1, 1, 4), route_index=torch.tensor([[0, 1, 2, 3]]))


def test_route_map_checked_once_when_built():
    """A pattern's route map is validated when built (no per-call device sync); a bad one is refused."""
    from vmamba_zoo.scan import ScanPattern

    class Repeats(ScanPattern):
        num_routes = 1
        is_gather = True

        def build_route_indices(self, height, width):
            return torch.zeros(1, height * width, dtype=torch.long)

    with pytest.raises(ValueError, match="visits a pixel more than once"):
        Repeats(4).route_indices(2, 2)
    cross = get_scan_pattern_cls("cross")(4)
    idx32 = cross.route_indices(3, 4, dtype=torch.int32)
    assert idx32.dtype == torch.int32 and idx32 is cross.route_indices(3, 4, dtype=torch.int32)
    assert torch.equal(idx32.long(), cross.route_indices(3, 4))


@pytest.mark.parametrize("scan", ["cross", "atrous"])
def test_fused_routes_several_channel_tiles(scan):
    """Maps wider than one channel tile: each program runs every route over its tile and merges without
    atomics; output and all gradients equal the materialising path."""
    torch.manual_seed(2)
    _check_fused_routes_against_reference(scan, batch=2, dim=48, height=5, width=6, n_state=1)


def _check_fused_routes_against_reference(scan: str, batch: int, dim: int, height: int, width: int,
                                          n_state: int) -> None:
    """The fused Triton route scan and the materialising CPU path agree in output and every input gradient
    (random pixel-major inputs, the pattern's routes over a height x width map of ``dim`` channels)."""
    route_index = get_scan_pattern_cls(scan)(dim).route_indices(height, width)
    routes, pixels = route_index.shape[0], height * width
    x = torch.randn(batch, pixels, dim, device=DEVICE).transpose(1, 2).requires_grad_()  # pixel-major
    delta = (torch.randn(batch, pixels, routes * dim, device=DEVICE) * 0.5).transpose(1, 2).requires_grad_()
    A = (-torch.rand(routes * dim, n_state, device=DEVICE) - 0.5).requires_grad_()
    B = torch.randn(batch, routes, n_state, pixels, device=DEVICE, requires_grad=True)
    C = torch.randn(batch, routes, n_state, pixels, device=DEVICE, requires_grad=True)
    D = torch.randn(routes * dim, device=DEVICE, requires_grad=True)
    bias = torch.randn(routes * dim, device=DEVICE, requires_grad=True)
    inputs = [x, delta, A, B, C, D, bias]
    fused = selective_scan_routes(*inputs, True, route_index=route_index, backend="triton", fused=True)
    ref = selective_scan_routes(*inputs, True, route_index=route_index, backend="cpu", fused=False)
    torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(ref)
    g_fused = torch.autograd.grad((fused * grad).sum(), inputs)
    g_ref = torch.autograd.grad((ref * grad).sum(), inputs)
    for name, a, b in zip(["x", "delta", "A", "B", "C", "D", "bias"], g_fused, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)


def test_fused_core_compiles_fullgraph():
    """Under torch.compile the fused core traces through the registered ops (no graph break) and agrees."""
    torch.manual_seed(3)
    mixer = SS2D(d_model=4, d_state=1, ssm_ratio=2.0, scan="cross", channel_first=True).to(DEVICE)
    x = torch.randn(2, mixer.d_inner, 5, 4, device=DEVICE).to(memory_format=torch.channels_last)
    eager = ss2d_core_fused(mixer, x, backend="triton")
    compiled = torch.compile(lambda t: ss2d_core_fused(mixer, t, backend="triton"), fullgraph=True,
                             backend="aot_eager")
    torch.testing.assert_close(compiled(x), eager, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
@pytest.mark.parametrize("gather", [True, False])  # per-tile rows (fused routes); atomically accumulated (T = 1)
def test_scan_bwd_returns_unreduced_bc_rows_that_sum_to_db_dc(gather):
    """reduce_bc=False: one (2, B, G, T, N, P) tensor whose sum over dim 3 is (dB, dC) of reduce_bc=True."""
    from vmamba_zoo_kernels.triton_scan import scan_bwd, scan_fwd

    torch.manual_seed(6)
    batch, routes, per_route, pixels, n_state = 2, 4, 32, 8, 2
    dim = per_route if gather else routes * per_route  # the shared map, or every route's rows
    u = torch.randn(batch, pixels, dim, device=DEVICE).transpose(1, 2)
    delta = torch.randn(batch, pixels, routes * per_route, device=DEVICE).transpose(1, 2)
    a_logs = torch.randn(routes * per_route, n_state, device=DEVICE) * 0.3
    bs, cs = (torch.randn(batch, routes, n_state, pixels, device=DEVICE) for _ in range(2))
    args = (u, delta, a_logs, bs, cs, None, None, None, None)
    index = torch.arange(pixels, dtype=torch.int32).repeat(routes, 1).to(DEVICE) if gather else None
    common = dict(route_index=index, covers_all=gather, a_is_log=True)
    _, states = scan_fwd(*args, True, False, False, torch.float32, **common)
    dy = torch.randn(batch, dim, pixels, device=DEVICE)
    reduced = scan_bwd(*args, states, dy, None, True, False, False, False, **common)
    rows = scan_bwd(*args, states, dy, None, True, False, False, False, reduce_bc=False, **common)
    tiles = 2 if gather else 1  # 32 channels in 16-channel tiles, or one atomically accumulated row
    assert rows[4] is None and rows[3].shape[:4] == (2, batch, routes, tiles)
    torch.testing.assert_close(rows[3].sum(3)[0], reduced[3])
    torch.testing.assert_close(rows[3].sum(3)[1], reduced[4])


@pytest.mark.parametrize("prefetch", [True, False])
def test_backward_with_and_without_prefetch(monkeypatch, prefetch):
    """The backward that loads the next chunk's inputs during the current one (small tiles, few states) and the
    one that loads each chunk when it starts give the reference gradients over routes of several chunks."""
    from vmamba_zoo_kernels import triton_scan
    from vmamba_zoo_kernels.tiling import pick_tiles

    torch.manual_seed(7)
    dim, height, width, n_state = 16, 9, 10, 1
    routes, pixels = 4, height * width  # the cross pattern
    tiles = pick_tiles(routes * dim, dim, pixels, n_state, pixel_major=True)
    assert -(-pixels // tiles.block_l) >= 3  # several chunks, so a prefetched chunk is used
    if not prefetch:
        monkeypatch.setattr(triton_scan, "BWD_PREFETCH_MAX_PER_THREAD", 0)
    assert triton_scan._bwd_prefetches(tiles.bwd_block_d, tiles.block_l, tiles.bwd_warps, n_state) == prefetch
    _check_fused_routes_against_reference("cross", batch=2, dim=dim, height=height, width=width, n_state=n_state)
