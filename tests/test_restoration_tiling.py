"""Tiled inference: exact for local nets, bit-exact for pointwise ops, bounded tile sizes."""
import pytest
import torch
from torch import nn

from vmamba_zoo.restoration.tiling import blend_window_1d, tile_starts, tiled_forward


def _conv_net(scale: int = 1) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1), nn.GELU(),
              nn.Conv2d(8, 3 * scale * scale, 3, padding=1)]  # receptive-field radius 3
    if scale > 1:
        layers.append(nn.PixelShuffle(scale))
    return nn.Sequential(*layers).eval()


class _ShapeRecorder(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.shapes = net, []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.net(x)


def test_tile_starts_cover_and_overlap():
    starts = tile_starts(100, 32, 12)
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(b - a <= 32 - 12 for a, b in zip(starts, starts[1:]))
    assert tile_starts(20, 32, 12) == [0]
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 16, 16)


def test_blend_window_profile():
    w = blend_window_1d(32, True, True, 16)
    assert torch.all(w[:4] == 0) and torch.all(w[-4:] == 0) and torch.all(w[12:20] == 1)
    assert torch.all(blend_window_1d(32, False, False, 16) == 1)


@pytest.mark.parametrize("scale", [1, 2])
def test_tiled_equals_full_for_local_conv_net(scale):
    net = _conv_net(scale)
    x = torch.rand(2, 3, 83, 70)
    with torch.no_grad():
        full = net(x)
    rec = _ShapeRecorder(net)
    tiled = tiled_forward(rec, x, tile_size=32, overlap=16, scale=scale, tile_batch_size=3)
    assert tiled.shape == full.shape
    # the conv net zero-pads at the image border exactly like the tiles there, so the result is
    # exact everywhere; check the interior separately to document the guarantee
    b = 3 * scale
    torch.testing.assert_close(tiled[..., b:-b, b:-b], full[..., b:-b, b:-b], rtol=0, atol=1e-5)
    torch.testing.assert_close(tiled, full, rtol=0, atol=1e-5)
    # bounded memory: the network only ever saw tiles (at most tile_batch_size of them per call)
    assert all(s[0] <= 3 * 2 and s[2] <= 32 and s[3] <= 32 for s in rec.shapes)
    assert len(rec.shapes) > 1


def test_small_overlap_shows_seams_for_wide_receptive_field():
    """The guarantee needs receptive-field radius <= overlap // 4: with overlap 4 (zero margin 1) it breaks."""
    net = _conv_net(1)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        full = net(x)
    tiled = tiled_forward(net, x, tile_size=24, overlap=4)
    assert (tiled - full).abs().max() > 1e-3


def test_pointwise_op_is_bit_exact():
    x = torch.randn(1, 3, 77, 91)

    def pointwise(t):
        return torch.tanh(t) * 1.7 + 0.1

    out = tiled_forward(pointwise, x, tile_size=20, overlap=8)
    assert torch.equal(out, pointwise(x))


def test_output_device_and_errors():
    net = _conv_net(1)
    x = torch.rand(1, 3, 40, 40)
    out = tiled_forward(net, x, tile_size=16, overlap=8, output_device=torch.device("cpu"))
    assert out.device.type == "cpu"
    out32 = tiled_forward(net, x, tile_size=16, overlap=8, accumulate_dtype=torch.float32)
    torch.testing.assert_close(out32, out, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        tiled_forward(net, x[0], tile_size=16)
    with pytest.raises(ValueError, match="times scale"):
        tiled_forward(net, x, tile_size=16, overlap=8, scale=2)
