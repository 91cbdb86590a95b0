"""Multi-scale state-space restoration networks: a Serpent-like U-Net and a wavelet MambaIR.

* :class:`SerpentUNet` follows the design described for Serpent (Sepehri et al., "Serpent:
  Scalable and Efficient Image Restoration via Multi-scale Structured State Space
  Models", arXiv:2403.17902): a U-Net-like hierarchy whose stages are stacks of
  VMamba-style blocks (cross-scan SS2D), so the image is processed as sequences at several
  scales, with the long, cheap scans at low resolution.  The official code was not
  available to us; this is an independent design with the same idea, not a reproduction,
  and there are no official weights.
* :class:`WaveletMambaIR` runs MambaIR's residual state-space groups on the Haar wavelet
  sub-bands of the shallow features: one orthonormal Haar level halves H and W, so every
  scan is 4x shorter (two levels: 16x) and the transform is exactly invertible.

Both map (B, C, H, W) in [0, 1] to (B, C, H*upscale, W*upscale) (the wavelet model:
upscale 1), pad internally to the needed multiple and crop back, and end with a global
residual to the (upsampled) input.  Their blocks are :class:`vmamba_zoo.models.mambair.RSSB`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..restoration.registry import register_restoration_model
from .mambair import RSSB

__all__ = ["SerpentUNet", "WaveletMambaIR", "haar_dwt2d", "haar_idwt2d"]


# ---------------------------------------------------------------- Haar transform
def haar_dwt2d(x: torch.Tensor) -> torch.Tensor:
    """One level of the orthonormal 2-D Haar transform.

    Args:
        x: (B, C, H, W) with even H, W.
    Returns:
        (B, 4C, H/2, W/2): sub-bands [LL, LH, HL, HH] stacked band-major (band k of
        channel c at index k*C + c).
    """
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"haar_dwt2d needs even H and W, got {tuple(x.shape[-2:])}")
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    ll = (a + b + c + d) * 0.5
    lh = (a - b + c - d) * 0.5
    hl = (a + b - c - d) * 0.5
    hh = (a - b - c + d) * 0.5
    return torch.cat([ll, lh, hl, hh], dim=1)


def haar_idwt2d(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_dwt2d`: (B, 4C, h, w) -> (B, C, 2h, 2w)."""
    if y.shape[1] % 4:
        raise ValueError(f"haar_idwt2d needs 4*C channels, got {y.shape[1]}")
    ll, lh, hl, hh = y.chunk(4, dim=1)
    a = (ll + lh + hl + hh) * 0.5
    b = (ll - lh + hl - hh) * 0.5
    c = (ll + lh - hl - hh) * 0.5
    d = (ll - lh - hl + hh) * 0.5
    bsz, ch, h, w = a.shape
    top = torch.stack([a, b], dim=-1).reshape(bsz, ch, h, 2 * w)
    bottom = torch.stack([c, d], dim=-1).reshape(bsz, ch, h, 2 * w)
    return torch.stack([top, bottom], dim=-2).reshape(bsz, ch, 2 * h, 2 * w)


# ---------------------------------------------------------------- shared pieces
class _Stage(nn.Module):
    """``depth`` RSSBs on a (B, C, H, W) map (run channels-last inside)."""

    def __init__(self, dim: int, depth: int, d_state: int, ssm_ratio: float, drop_path: Sequence[float],
                 squeeze_factor: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([RSSB(dim, d_state, ssm_ratio, drop_path[i], False, squeeze_factor)
                                     for i in range(depth)])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training:
                t = checkpoint(blk, t, use_reentrant=False)
            else:
                t = blk(t)
        return t.permute(0, 3, 1, 2)


def _pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    return x


def _drop_path_rates(depths: Sequence[int], rate: float) -> List[List[float]]:
    dpr = torch.linspace(0, rate, max(1, sum(depths))).tolist()
    out, start = [], 0
    for d in depths:
        out.append(dpr[start:start + d])
        start += d
    return out


class _PixelShuffleHead(nn.Sequential):
    def __init__(self, dim: int, out_chans: int, scale: int) -> None:
        super().__init__(nn.Conv2d(dim, out_chans * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))


# ---------------------------------------------------------------- Serpent-like U-Net
class SerpentUNet(nn.Module):
    """U-Net of state-space stages (Serpent-like), for denoising, deblurring and SR.

    Encoder stage i works at 1/2^i resolution with ``dims[i]`` channels; a strided 2x2
    conv goes down, a 2x2 transposed conv goes up, skip features are concatenated and
    fused by a 1x1 conv.  The bottleneck is the last encoder stage.

    Args:
        in_chans: image channels.
        dims: widths per level (len = number of levels).
        depths: RSSBs per encoder level; decoder level i reuses ``depths[i]``.
        d_state: SSM state size.
        ssm_ratio: SS2D inner width ratio.
        upscale: SR factor (pixel-shuffle head and a bilinear-upsampled input residual).
        drop_path_rate: stochastic depth over the encoder blocks.
        squeeze_factor: channel-attention squeeze of the blocks' CAB.
    """

    def __init__(self, in_chans: int = 3, dims: Sequence[int] = (32, 64, 128), depths: Sequence[int] = (2, 2, 4),
                 d_state: int = 16, ssm_ratio: float = 1.0, upscale: int = 1, drop_path_rate: float = 0.0,
                 squeeze_factor: int = 16) -> None:
        super().__init__()
        if len(dims) != len(depths) or not dims:
            raise ValueError(f"dims and depths need the same non-zero length, got {dims} and {depths}")
        if upscale < 1:
            raise ValueError(f"upscale must be >= 1, got {upscale}")
        self.in_chans, self.upscale = in_chans, int(upscale)
        self.num_levels = len(dims)
        self.size_multiple = 2 ** (self.num_levels - 1)
        dpr = _drop_path_rates(depths, drop_path_rate)
        self.conv_in = nn.Conv2d(in_chans, dims[0], 3, 1, 1)
        self.encoders = nn.ModuleList([_Stage(dims[i], depths[i], d_state, ssm_ratio, dpr[i], squeeze_factor)
                                       for i in range(self.num_levels)])
        self.downs = nn.ModuleList([nn.Conv2d(dims[i], dims[i + 1], 2, 2) for i in range(self.num_levels - 1)])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(dims[i + 1], dims[i], 2, 2) for i in range(self.num_levels - 1)])
        self.fuses = nn.ModuleList([nn.Conv2d(2 * dims[i], dims[i], 1) for i in range(self.num_levels - 1)])
        self.decoders = nn.ModuleList([_Stage(dims[i], depths[i], d_state, ssm_ratio, [0.0] * depths[i],
                                              squeeze_factor) for i in range(self.num_levels - 1)])
        if self.upscale == 1:
            self.conv_out = nn.Conv2d(dims[0], in_chans, 3, 1, 1)
        else:
            self.conv_out = _PixelShuffleHead(dims[0], in_chans, self.upscale)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in list(self.encoders) + list(self.decoders):
            stage.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H*upscale, W*upscale); any H, W (padded internally)."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"SerpentUNet(in_chans={self.in_chans}) expects (B, {self.in_chans}, H, W), "
                             f"got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        xp = _pad(x, self.size_multiple)
        feat = self.conv_in(xp)
        skips = []
        for i in range(self.num_levels):
            feat = self.encoders[i](feat)
            if i < self.num_levels - 1:
                skips.append(feat)
                feat = self.downs[i](feat)
        for i in reversed(range(self.num_levels - 1)):
            feat = self.ups[i](feat)
            feat = self.fuses[i](torch.cat([feat, skips[i]], dim=1))
            feat = self.decoders[i](feat)
        out = self.conv_out(feat)
        base = xp if self.upscale == 1 else F.interpolate(xp, scale_factor=self.upscale, mode="bilinear",
                                                          align_corners=False)
        out = out + base
        return out[..., : h * self.upscale, : w * self.upscale]


# ---------------------------------------------------------------- wavelet MambaIR
class WaveletMambaIR(nn.Module):
    """MambaIR-style residual state-space groups on Haar sub-bands (denoising / JPEG).

    conv3x3 (C -> D) at full resolution, ``levels`` Haar levels (D -> 4^levels D channels
    at H/2^levels), 1x1 conv to ``embed_dim``, RSSGs (RSSBs + conv + residual), 1x1 conv
    back, inverse Haar, + shallow features, conv3x3 -> C, + input.

    Args:
        in_chans: image channels.
        shallow_dim: D, width of the full-resolution features.
        embed_dim: width of the sub-band features.
        depths: RSSBs per group.
        levels: Haar levels (1 or 2).
        d_state, ssm_ratio, squeeze_factor, drop_path_rate: block settings.
    """

    def __init__(self, in_chans: int = 3, shallow_dim: int = 16, embed_dim: int = 64, depths: Sequence[int] = (2, 2),
                 levels: int = 1, d_state: int = 16, ssm_ratio: float = 1.0, squeeze_factor: int = 16,
                 drop_path_rate: float = 0.0, upscale: int = 1) -> None:
        super().__init__()
        if upscale != 1:
            raise ValueError("WaveletMambaIR restores at the input size (upscale=1); use MambaIR or SerpentUNet for SR")
        if levels not in (1, 2):
            raise ValueError(f"levels must be 1 or 2, got {levels}")
        self.in_chans, self.levels, self.upscale = in_chans, levels, 1
        self.size_multiple = 2 ** levels
        band_chans = shallow_dim * 4 ** levels
        dpr = _drop_path_rates(depths, drop_path_rate)
        self.conv_first = nn.Conv2d(in_chans, shallow_dim, 3, 1, 1)
        self.band_in = nn.Conv2d(band_chans, embed_dim, 1)
        self.groups = nn.ModuleList([_Stage(embed_dim, d, d_state, ssm_ratio, dpr[i], squeeze_factor)
                                     for i, d in enumerate(depths)])
        self.group_convs = nn.ModuleList([nn.Conv2d(embed_dim, embed_dim, 3, 1, 1) for _ in depths])
        self.band_out = nn.Conv2d(embed_dim, band_chans, 1)
        self.conv_last = nn.Conv2d(shallow_dim, in_chans, 3, 1, 1)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.groups:
            stage.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W); any H, W (padded internally)."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"WaveletMambaIR(in_chans={self.in_chans}) expects (B, {self.in_chans}, H, W), "
                             f"got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        xp = _pad(x, self.size_multiple)
        first = self.conv_first(xp)
        bands = first
        for _ in range(self.levels):
            bands = haar_dwt2d(bands)
        feat = self.band_in(bands)
        for stage, conv in zip(self.groups, self.group_convs):
            feat = conv(stage(feat)) + feat
        bands = self.band_out(feat)
        for _ in range(self.levels):
            bands = haar_idwt2d(bands)
        out = self.conv_last(bands + first) + xp
        return out[..., :h, :w]


# ---------------------------------------------------------------- variants
RESTORATION_NET_CONFIGS: Dict[str, Dict[str, Any]] = {
    "serpent_unet_small": dict(dims=(32, 64, 128), depths=(2, 2, 4), d_state=16, ssm_ratio=1.0),
    "serpent_unet_tiny": dict(dims=(8, 16), depths=(1, 1), d_state=4, ssm_ratio=1.0, squeeze_factor=4),
    "wavelet_mambair_small": dict(shallow_dim=32, embed_dim=96, depths=(4, 4, 4), levels=1, d_state=16),
    "wavelet_mambair_tiny": dict(shallow_dim=8, embed_dim=16, depths=(1,), levels=1, d_state=4, squeeze_factor=4),
    # the shipped sigma = 25 colour denoiser (configs/restoration/wavelet_mambair_dn25_skimage.py)
    "wavelet_mambair_dn25_skimage": dict(in_chans=3, shallow_dim=16, embed_dim=48, depths=(2, 2), levels=2,
                                         d_state=8, ssm_ratio=1.0, squeeze_factor=8),
}


@register_restoration_model
def serpent_unet_small(**kwargs: Any) -> SerpentUNet:
    """Serpent-like U-Net, 3 levels (32/64/128 wide)."""
    return SerpentUNet(**dict(RESTORATION_NET_CONFIGS["serpent_unet_small"], **kwargs))


@register_restoration_model
def serpent_unet_tiny(**kwargs: Any) -> SerpentUNet:
    """A tiny 2-level Serpent-like U-Net for tests."""
    return SerpentUNet(**dict(RESTORATION_NET_CONFIGS["serpent_unet_tiny"], **kwargs))


@register_restoration_model
def wavelet_mambair_small(**kwargs: Any) -> WaveletMambaIR:
    """Wavelet MambaIR: 3 groups of 4 RSSBs on one Haar level (96 wide)."""
    return WaveletMambaIR(**dict(RESTORATION_NET_CONFIGS["wavelet_mambair_small"], **kwargs))


@register_restoration_model
def wavelet_mambair_tiny(**kwargs: Any) -> WaveletMambaIR:
    """A tiny wavelet MambaIR for tests."""
    return WaveletMambaIR(**dict(RESTORATION_NET_CONFIGS["wavelet_mambair_tiny"], **kwargs))


@register_restoration_model
def wavelet_mambair_dn25_skimage(pretrained: bool = False, **kwargs: Any) -> WaveletMambaIR:
    """The shipped sigma = 25 colour denoiser (0.18M parameters); ``pretrained=True`` loads the
    weights shipped in the package (model card ``model_cards/wavelet_mambair_dn25_skimage.md``)."""
    if pretrained:
        if kwargs:
            raise ValueError(f"pretrained=True uses the shipped architecture; drop {sorted(kwargs)}")
        from ..restoration.pretrained import load_shipped_model

        return load_shipped_model("wavelet_mambair_dn25_skimage").train()
    return WaveletMambaIR(**dict(RESTORATION_NET_CONFIGS["wavelet_mambair_dn25_skimage"], **kwargs))
