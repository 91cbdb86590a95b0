"""Scan patterns: route maps, scan/merge semantics, registry."""
import pytest
import torch

from vmamba_zoo.scan import (
    ScanPattern,
    create_scan_pattern,
    get_scan_pattern_cls,
    list_scan_patterns,
    register_scan_pattern,
)
from vmamba_zoo.scan import base as scan_base

SIZES = [(1, 1), (2, 3), (7, 7), (15, 9), (4, 1)]


def _gather_patterns():
    return [n for n in list_scan_patterns() if get_scan_pattern_cls(n).is_gather]


def test_builtin_patterns_registered():
    assert {"cross", "uni", "bi"} <= set(list_scan_patterns())


def test_route_maps_spelled_out_2x3():
    # grid of flat indices (H=2, W=3):  0 1 2
    #                                   3 4 5
    cross = create_scan_pattern("cross", 4).route_indices(2, 3)
    assert cross.tolist() == [
        [0, 1, 2, 3, 4, 5],  # row-major
        [0, 3, 1, 4, 2, 5],  # column-major
        [5, 4, 3, 2, 1, 0],  # row-major reversed
        [5, 2, 4, 1, 3, 0],  # column-major reversed
    ]
    assert create_scan_pattern("uni", 4).route_indices(2, 3).tolist() == [[0, 1, 2, 3, 4, 5]]
    assert create_scan_pattern("bi", 4).route_indices(2, 3).tolist() == [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]]


def test_cross_scan_reads_pixels_in_route_order():
    x = torch.arange(6.0).view(1, 1, 2, 3) * 10  # pixel (i, j) holds 10 * (3 i + j)
    xs = create_scan_pattern("cross", 1).scan(x)
    assert xs.shape == (1, 4, 1, 6)
    assert xs[0, :, 0].tolist() == [
        [0, 10, 20, 30, 40, 50],
        [0, 30, 10, 40, 20, 50],
        [50, 40, 30, 20, 10, 0],
        [50, 20, 40, 10, 30, 0],
    ]


@pytest.mark.parametrize("name", ["cross", "uni", "bi"])
@pytest.mark.parametrize("hw", SIZES)
def test_merge_of_scan_is_k_times_identity(name, hw):
    pattern = create_scan_pattern(name, 3)
    x = torch.randn(2, 3, *hw)
    xs = pattern.scan(x)
    assert xs.shape == (2, pattern.num_routes, 3, hw[0] * hw[1])
    torch.testing.assert_close(pattern.merge(xs, *hw), pattern.num_routes * x)


@pytest.mark.parametrize("name", _gather_patterns())
@pytest.mark.parametrize("hw", SIZES)
def test_fast_paths_agree_with_route_indices(name, hw):
    """Every gather pattern's scan/merge must equal the generic index gather/scatter-add."""
    pattern = create_scan_pattern(name, 3)
    x = torch.randn(2, 3, *hw)
    xs = pattern.scan(x)
    torch.testing.assert_close(xs, ScanPattern.scan(pattern, x), rtol=0, atol=0)
    y = torch.randn_like(xs)
    torch.testing.assert_close(pattern.merge(y, *hw), ScanPattern.merge(pattern, y, *hw))


@pytest.mark.parametrize("name", list_scan_patterns())
@pytest.mark.parametrize("hw", [(5, 3), (6, 4)])
def test_merge_is_adjoint_of_scan(name, hw):
    """<scan(x), y> == <x, merge(y)> for every registered pattern that is linear in x."""
    pattern = create_scan_pattern(name, 4).double()
    x = torch.randn(2, 4, *hw, dtype=torch.float64)
    xs = pattern.scan(x)
    y = torch.randn_like(xs)
    torch.testing.assert_close((xs * y).sum(), (x * pattern.merge(y, *hw)).sum())


@pytest.mark.parametrize("name", _gather_patterns())
def test_route_maps_cover_every_pixel(name):
    pattern = create_scan_pattern(name, 1)
    for h, w in SIZES:
        idx = pattern.route_indices(h, w)
        assert idx.dtype == torch.long and idx.shape == (pattern.num_routes, pattern.seq_len(h, w))
        valid = idx[idx >= 0]
        assert valid.max() < h * w
        assert set(valid.tolist()) == set(range(h * w))


def test_route_indices_cached_per_size_and_device():
    pattern = create_scan_pattern("cross", 1)
    a = pattern.route_indices(3, 4)
    assert pattern.route_indices(3, 4) is a
    assert pattern.route_indices(4, 3) is not a


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown scan pattern 'nope'.*cross"):
        create_scan_pattern("nope", 4)
    with pytest.raises(ValueError, match="already registered"):
        register_scan_pattern("cross")(type("Other", (ScanPattern,), {}))
    with pytest.raises(TypeError):
        register_scan_pattern("not_a_pattern")(int)
    with pytest.raises(ValueError, match="dim must be positive"):
        create_scan_pattern("cross", 0)


def test_merge_rejects_wrong_shapes():
    pattern = create_scan_pattern("cross", 2)
    with pytest.raises(ValueError, match="K=4"):
        pattern.merge(torch.zeros(1, 3, 2, 6), 2, 3)
    with pytest.raises(ValueError, match="L=6"):
        pattern.merge(torch.zeros(1, 4, 2, 5), 2, 3)
    with pytest.raises(ValueError, match="B, D, H, W"):
        pattern.scan(torch.zeros(2, 3, 4))


@pytest.fixture
def padded_pattern():
    """A toy gather pattern with padding: column-major sub-grids of stride 2, padded to equal length."""

    class _StrideTwoColumns(ScanPattern):
        num_routes = 2

        def seq_len(self, height, width):
            return height * ((width + 1) // 2)

        def build_route_indices(self, height, width):
            grid = torch.arange(height * width).view(height, width)
            half = (width + 1) // 2
            routes = torch.full((2, height, half), -1, dtype=torch.long)
            routes[0, :, : grid[:, 0::2].shape[1]] = grid[:, 0::2]
            routes[1, :, : grid[:, 1::2].shape[1]] = grid[:, 1::2]
            return routes.transpose(1, 2).reshape(2, -1)

    register_scan_pattern("_test_stride2")(_StrideTwoColumns)
    yield create_scan_pattern("_test_stride2", 2)
    scan_base._SCAN_PATTERNS.pop("_test_stride2")


def test_padding_steps_read_zero_and_are_dropped(padded_pattern):
    x = torch.arange(1.0, 7.0).view(1, 1, 2, 3).expand(1, 2, 2, 3)  # 1 2 3 / 4 5 6
    assert padded_pattern.route_indices(2, 3).tolist() == [[0, 3, 2, 5], [1, 4, -1, -1]]
    xs = padded_pattern.scan(x)
    assert xs[0, :, 0].tolist() == [[1, 4, 3, 6], [2, 5, 0, 0]]
    y = torch.ones_like(xs)
    torch.testing.assert_close(padded_pattern.merge(y, 2, 3), torch.ones(1, 2, 2, 3))
    torch.testing.assert_close(padded_pattern.merge(xs, 2, 3), x)


@pytest.mark.parametrize("name", list_scan_patterns())
def test_caches_made_under_inference_mode_serve_training(name):
    """A pattern first used under torch.inference_mode (benchmarks, eval) must still train afterwards."""
    from vmamba_zoo.layers import SS2D

    mixer = SS2D(d_model=4, d_state=1, ssm_ratio=1.0, scan=name, channel_first=True).eval()
    x = torch.randn(1, 4, 6, 5)
    with torch.inference_mode():
        mixer(x)
    mixer.train()
    mixer(x.requires_grad_()).sum().backward()
    assert x.grad is not None
