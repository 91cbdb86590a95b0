"""MambaIR: image restoration with residual state-space groups.

Paper: Guo et al., "MambaIR: A Simple Baseline for Image Restoration with State-Space
Model", ECCV 2024 (arXiv:2402.15648).  Official code: https://github.com/csguoh/MambaIR
(``basicsr/archs/mambair_arch.py``, Apache-2.0).  This is an independent implementation
on the zoo's :class:`vmamba_zoo.layers.SS2D` mixer (cross scan, 4 routes); parameter
names and shapes follow the official checkpoints, so official BasicSR ``.pth`` files
(``params`` / ``params_ema``) load through :func:`checkpoint_filter_fn`.

Pipeline (shapes for a (B, C_in, h, w) input, embed dim D, scale s)::

    x -> (x - mean) * img_range -> conv_first (B, D, h, w)
      -> LN -> N x RSSG -> LN -> conv_after_body -> + conv_first output
      -> head: pixelshuffle (classic SR) | pixelshuffledirect (light SR) | conv (s = 1,
         with a global residual to the input)
      -> / img_range + mean  (B, C_in, h*s, w*s)

RSSG (``ResidualGroup``) = ``depth`` x RSSB, conv3x3, residual.
RSSB (``VSSBlock``): ``x = x * skip_scale + DropPath(SS2D(LN(x)))``;
``x = x * skip_scale2 + CAB(LN(x))`` with CAB = conv-GELU-conv + RCAN channel attention
(light SR: 1x1 / depth-wise / dilated depth-wise convolutions).
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from timm.layers import DropPath, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import SS2D
from ..restoration.registry import register_restoration_model

__all__ = [
    "MambaIR",
    "RSSB",
    "RSSG",
    "CAB",
    "ChannelAttention",
    "checkpoint_filter_fn",
    "MAMBAIR_CONFIGS",
]

_DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class ChannelAttention(nn.Module):
    """RCAN channel attention: x * sigmoid(W2 relu(W1 avgpool(x))) on (B, C, H, W)."""

    def __init__(self, num_feat: int, squeeze_factor: int = 16) -> None:
        super().__init__()
        hidden = max(1, num_feat // squeeze_factor)
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_feat, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Convolutional local enhancement + channel attention on (B, C, H, W).

    Classic: conv3x3 (C -> C/3), GELU, conv3x3 (-> C), CA(squeeze 30).
    Light SR: 1x1 (C -> C/2), depth-wise 3x3, GELU, 1x1 (-> C), depth-wise 3x3 dilation 2, CA.
    """

    def __init__(self, num_feat: int, is_light_sr: bool = False, compress_ratio: int = 3,
                 squeeze_factor: int = 30) -> None:
        super().__init__()
        if is_light_sr:
            mid = num_feat // 2
            self.cab = nn.Sequential(
                nn.Conv2d(num_feat, mid, 1),
                nn.Conv2d(mid, mid, 3, 1, 1, groups=mid),
                nn.GELU(),
                nn.Conv2d(mid, num_feat, 1),
                nn.Conv2d(num_feat, num_feat, 3, 1, padding=2, groups=num_feat, dilation=2),
                ChannelAttention(num_feat, squeeze_factor),
            )
        else:
            mid = max(1, num_feat // compress_ratio)
            self.cab = nn.Sequential(
                nn.Conv2d(num_feat, mid, 3, 1, 1),
                nn.GELU(),
                nn.Conv2d(mid, num_feat, 3, 1, 1),
                ChannelAttention(num_feat, squeeze_factor),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)


class RSSB(nn.Module):
    """Residual state-space block (official class name ``VSSBlock``) on (B, H, W, C) maps."""

    def __init__(self, dim: int, d_state: int = 16, expand: float = 2.0, drop_path: float = 0.0,
                 is_light_sr: bool = False, squeeze_factor: int = 30) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = SS2D(d_model=dim, d_state=d_state, ssm_ratio=expand, d_conv=3, conv_bias=True,
                                   bias=False, gate=True, scan="cross", channel_first=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.skip_scale = nn.Parameter(torch.ones(dim))
        self.conv_blk = CAB(dim, is_light_sr, squeeze_factor=squeeze_factor)
        self.ln_2 = nn.LayerNorm(dim)
        self.skip_scale2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        x = x * self.skip_scale + self.drop_path(self.self_attention(self.ln_1(x)))
        local = self.conv_blk(self.ln_2(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x * self.skip_scale2 + local


class _BlockStack(nn.Module):
    """``blocks`` container (official ``BasicLayer``) with optional gradient checkpointing."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x


def _resi_conv(dim: int, resi_connection: str) -> nn.Module:
    if resi_connection == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if resi_connection == "3conv":
        return nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(dim // 4, dim, 3, 1, 1))
    raise ValueError(f"resi_connection must be '1conv' or '3conv', got {resi_connection!r}")


class RSSG(nn.Module):
    """Residual state-space group (official ``ResidualGroup``): RSSBs, conv, residual."""

    def __init__(self, dim: int, depth: int, d_state: int, expand: float, drop_path: Sequence[float],
                 resi_connection: str = "1conv", is_light_sr: bool = False, squeeze_factor: int = 30) -> None:
        super().__init__()
        self.residual_group = _BlockStack([
            RSSB(dim, d_state, expand, drop_path[i], is_light_sr, squeeze_factor) for i in range(depth)])
        self.conv = _resi_conv(dim, resi_connection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        y = self.residual_group(x).permute(0, 3, 1, 2)
        return self.conv(y).permute(0, 2, 3, 1) + x


class _TokenNorm(nn.Module):
    """Official ``PatchEmbed`` with patch size 1: only an optional LayerNorm named ``norm``."""

    def __init__(self, dim: int, use_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if use_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class _Upsample(nn.Sequential):
    """conv + PixelShuffle(2) repeated for 2^n, or one conv + PixelShuffle(3)."""

    def __init__(self, scale: int, num_feat: int) -> None:
        layers: List[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"upscale {scale} is not supported; use a power of 2 or 3")
        super().__init__(*layers)


class MambaIR(nn.Module):
    """MambaIR (v1) restoration network.

    Argument names are the official ones (a ``network_g`` section of an official YAML can
    be passed as keyword arguments; ``img_size`` and ``type`` are accepted and ignored).

    Args:
        in_chans: image channels (3 colour, 1 grey).
        embed_dim: feature width D.
        depths: RSSB count of each RSSG.
        d_state: SSM state size.
        mlp_ratio: SS2D inner width ratio (official name; the SS2D ``expand``).
        drop_rate: dropout after the first LayerNorm.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        patch_norm: LayerNorm after the shallow features.
        upscale: SR factor (1 for denoising / JPEG artefact removal).
        img_range: image scale inside the network.
        upsampler: ``'pixelshuffle'`` (classic SR), ``'pixelshuffledirect'`` (light SR,
            also switches CAB to its light form) or ``''`` (upscale 1).
        resi_connection: ``'1conv'`` or ``'3conv'``.
        squeeze_factor: channel-attention squeeze (30 officially).
        num_feat: reconstruction width of the classic SR head (64).
    """

    def __init__(
        self,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (6, 6, 6, 6),
        d_state: int = 16,
        mlp_ratio: float = 2.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        patch_norm: bool = True,
        upscale: int = 2,
        img_range: float = 1.0,
        upsampler: str = "",
        resi_connection: str = "1conv",
        squeeze_factor: int = 30,
        num_feat: int = 64,
        img_size: Any = None,
        patch_size: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        kwargs.pop("type", None)
        if kwargs:
            raise TypeError(f"MambaIR got unexpected arguments {sorted(kwargs)}")
        if patch_size != 1:
            raise ValueError(f"MambaIR works on pixels (patch_size=1), got patch_size={patch_size}")
        if upsampler not in ("pixelshuffle", "pixelshuffledirect", ""):
            raise ValueError(f"upsampler must be 'pixelshuffle', 'pixelshuffledirect' or '', got {upsampler!r}")
        if upsampler == "" and upscale != 1:
            raise ValueError(f"upscale={upscale} needs upsampler='pixelshuffle' or 'pixelshuffledirect'")
        self.in_chans, self.embed_dim, self.upscale = in_chans, embed_dim, int(upscale)
        self.upsampler, self.img_range = upsampler, float(img_range)
        self.num_features = embed_dim
        mean = torch.tensor(_DIV2K_RGB_MEAN).view(1, 3, 1, 1) if in_chans == 3 else torch.zeros(1, 1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.is_light_sr = upsampler == "pixelshuffledirect"

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = _TokenNorm(embed_dim, patch_norm)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(RSSG(embed_dim, depth, d_state, mlp_ratio, dpr[start:start + depth],
                                    resi_connection, self.is_light_sr, squeeze_factor))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = _resi_conv(embed_dim, resi_connection)

        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
            self.upsample = _Upsample(self.upscale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        elif upsampler == "pixelshuffledirect":
            self.upsample = nn.Sequential(nn.Conv2d(embed_dim, self.upscale ** 2 * in_chans, 3, 1, 1),
                                          nn.PixelShuffle(self.upscale))
        else:
            self.conv_last = nn.Conv2d(embed_dim, in_chans, 3, 1, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {n for n, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for layer in self.layers:
            layer.residual_group.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep features: (B, D, h, w) -> (B, D, h, w) (RSSGs between LayerNorms)."""
        t = self.pos_drop(self.patch_embed(x.permute(0, 2, 3, 1)))
        for layer in self.layers:
            t = layer(t)
        return self.norm(t).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, h, w) in [0, 1] -> (B, C_in, h*upscale, w*upscale)."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"MambaIR(in_chans={self.in_chans}) expects (B, {self.in_chans}, H, W), "
                             f"got {tuple(x.shape)}")
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        first = self.conv_first(x)
        res = self.conv_after_body(self.forward_features(first)) + first
        if self.upsampler == "pixelshuffle":
            out = self.conv_last(self.upsample(self.conv_before_upsample(res)))
        elif self.upsampler == "pixelshuffledirect":
            out = self.upsample(res)
        else:
            out = x + self.conv_last(res)
        return out / self.img_range + mean


# ---------------------------------------------------------------- checkpoints
_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module,
                         param_key: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Official MambaIR / BasicSR checkpoint -> this model's state dict.

    * unwraps BasicSR's ``params_ema`` (preferred) or ``params`` (``param_key`` picks one
      explicitly), and mmengine/timm ``state_dict`` / ``model`` wrappers;
    * strips ``module.`` (DataParallel) and ``network.`` (the zoo's mmengine
      ``RestorationModel``) prefixes;
    * drops the non-persistent ``mean`` if a checkpoint carries it.

    The official parameter layout is this model's layout (the zoo's SS2D keeps VMamba's
    names: ``in_proj``, ``conv2d``, ``x_proj_weight``, ``dt_projs_weight``,
    ``dt_projs_bias``, ``A_logs``, ``Ds``, ``out_norm``, ``out_proj``), so no key is renamed;
    shapes are checked and a mismatch raises a ``ValueError`` naming the key.
    """
    sd: Mapping[str, Any] = state_dict
    if param_key is not None:
        if param_key not in sd:
            raise KeyError(f"param_key {param_key!r} not in checkpoint (keys: {sorted(sd)[:8]})")
        sd = sd[param_key]
    else:
        for key in _WRAPPER_KEYS:
            if key in sd and isinstance(sd[key], Mapping):
                sd = sd[key]
                break
    out: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        k = re.sub(r"^(module\.|network\.)+", "", k)
        if k == "mean":
            continue
        out[k] = v
    own = model.state_dict()
    for k, v in out.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise ValueError(f"checkpoint tensor {k!r} has shape {tuple(v.shape)}, the model expects "
                             f"{tuple(own[k].shape)}; check embed_dim / d_state / mlp_ratio / upscale")
    return out


# ---------------------------------------------------------------- variants
#: Constructor arguments of the official configurations (``options/test/mambair/*.yml``).
MAMBAIR_CONFIGS: Dict[str, Dict[str, Any]] = {
    "mambair_sr_x2": dict(upscale=2, embed_dim=180, depths=(6,) * 6, d_state=16, mlp_ratio=2.0, upsampler="pixelshuffle"),
    "mambair_sr_x3": dict(upscale=3, embed_dim=180, depths=(6,) * 6, d_state=16, mlp_ratio=2.0, upsampler="pixelshuffle"),
    "mambair_sr_x4": dict(upscale=4, embed_dim=180, depths=(6,) * 6, d_state=16, mlp_ratio=2.0, upsampler="pixelshuffle"),
    "mambair_light_sr_x2": dict(upscale=2, embed_dim=60, depths=(6,) * 4, d_state=10, mlp_ratio=1.2,
                                upsampler="pixelshuffledirect"),
    "mambair_light_sr_x3": dict(upscale=3, embed_dim=60, depths=(6,) * 4, d_state=10, mlp_ratio=1.2,
                                upsampler="pixelshuffledirect"),
    "mambair_light_sr_x4": dict(upscale=4, embed_dim=60, depths=(6,) * 4, d_state=10, mlp_ratio=1.2,
                                upsampler="pixelshuffledirect"),
    "mambair_color_dn": dict(upscale=1, in_chans=3, embed_dim=180, depths=(6,) * 6, d_state=16, mlp_ratio=1.2),
    "mambair_gray_dn": dict(upscale=1, in_chans=1, embed_dim=180, depths=(6,) * 6, d_state=16, mlp_ratio=1.2),
    "mambair_car": dict(upscale=1, in_chans=1, embed_dim=180, depths=(6,) * 6, d_state=16, mlp_ratio=1.2),
    # a tiny configuration for tests and CPU experiments (no official weights)
    "mambair_tiny": dict(upscale=1, embed_dim=16, depths=(1, 1), d_state=4, mlp_ratio=1.0, squeeze_factor=4),
}


def _make(name: str, **kwargs: Any) -> MambaIR:
    return MambaIR(**dict(MAMBAIR_CONFIGS[name], **kwargs))


@register_restoration_model
def mambair_sr_x2(**kwargs: Any) -> MambaIR:
    """Classic SR x2 (DF2K; Urban100 34.15 dB officially), 180 wide, 6x6 blocks."""
    return _make("mambair_sr_x2", **kwargs)


@register_restoration_model
def mambair_sr_x3(**kwargs: Any) -> MambaIR:
    """Classic SR x3."""
    return _make("mambair_sr_x3", **kwargs)


@register_restoration_model
def mambair_sr_x4(**kwargs: Any) -> MambaIR:
    """Classic SR x4 (20.6M parameters)."""
    return _make("mambair_sr_x4", **kwargs)


@register_restoration_model
def mambair_light_sr_x2(**kwargs: Any) -> MambaIR:
    """Lightweight SR x2 (DIV2K; 905K parameters), one-step pixel-shuffle head."""
    return _make("mambair_light_sr_x2", **kwargs)


@register_restoration_model
def mambair_light_sr_x3(**kwargs: Any) -> MambaIR:
    """Lightweight SR x3."""
    return _make("mambair_light_sr_x3", **kwargs)


@register_restoration_model
def mambair_light_sr_x4(**kwargs: Any) -> MambaIR:
    """Lightweight SR x4 (924K parameters)."""
    return _make("mambair_light_sr_x4", **kwargs)


@register_restoration_model
def mambair_color_dn(**kwargs: Any) -> MambaIR:
    """Gaussian colour denoising (sigma 15/25/50 weights share this config; 15.8M parameters)."""
    return _make("mambair_color_dn", **kwargs)


@register_restoration_model
def mambair_gray_dn(**kwargs: Any) -> MambaIR:
    """Grey-scale Gaussian denoising (the colour config with one channel)."""
    return _make("mambair_gray_dn", **kwargs)


@register_restoration_model
def mambair_car(**kwargs: Any) -> MambaIR:
    """Grey JPEG compression-artefact reduction (q10/30/40 weights share this config)."""
    return _make("mambair_car", **kwargs)


@register_restoration_model
def mambair_tiny(**kwargs: Any) -> MambaIR:
    """A tiny MambaIR (16 wide, 2 blocks) for tests; any task via ``upscale``/``upsampler``."""
    return _make("mambair_tiny", **kwargs)
