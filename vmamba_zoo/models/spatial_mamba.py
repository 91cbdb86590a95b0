"""Spatial-Mamba: visual state space models with structure-aware state fusion.

Paper: "Spatial-Mamba: Effective Visual State Space Models via Structure-Aware
State Fusion", Chaodong Xiao, Minghan Li, Zhengqiang Zhang, Deyu Meng, Lei Zhang,
ICLR 2025 (arXiv:2410.15091).  Official code and ImageNet-1k weights
(Apache-2.0): https://github.com/EdwardChasel/Spatial-Mamba (weights on Google Drive).

Architecture:

* stem: Conv3x3/s2 (C/2) BN ReLU, a residual pair of Conv3x3 BN (ReLU) convs,
  Conv3x3/s2 (4C) BN ReLU, Conv1x1 (C) BN;
* blocks (MLLA-style): ``x += DWConv3x3(x)``; ``x += DropPath(SASSM(LN(x)))``;
  ``x += DWConv3x3(x)``; ``x += DropPath(MLP(LN(x)))``.  The structure-aware SSM
  is the zoo's SS2D (gated, d_state 1, ssm_ratio 2) with one raster scan whose
  hidden states are fused by dilated depth-wise convolutions
  (:class:`vmamba_zoo.scan.SASFScan`);
* downsampling between stages: Conv1x1 (8C) ReLU, DW3x3/s2 ReLU, Conv1x1 (2C) BN;
* head: LayerNorm, global average pool, Linear.

timm model API as in :class:`vmamba_zoo.models.vmamba.VSSM` (whose methods it
reuses); official checkpoints convert at load time (:func:`checkpoint_filter_fn`).
Not copied from upstream: the merged 11x11 eval kernel that is cached once and
never refreshed (here it is rebuilt whenever the weights change).
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional, Sequence, Type, Union

import torch
from torch import nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath
from timm.models import generate_default_cfgs, register_model

from ..layers import SS2D, LayerNorm, make_norm
from ..layers.conv import conv2d_keep_layout, depthwise3x3_fused, depthwise3x3_fused_applies
from ._zoo import ModelFamily, create_zoo_model, register_family, stage_dims
from .vmamba import VSSM, Mlp, VSSStage

__all__ = ["SpatialMamba", "SpatialMambaBlock", "SpatialMambaStem", "SpatialMambaDownsample", "checkpoint_filter_fn"]

FAMILY = register_family(ModelFamily(
    name="spatial_mamba",
    module="spatial_mamba",
    scan_patterns=("sasf",),
    paper="arXiv:2410.15091",
    origin_url="https://github.com/EdwardChasel/Spatial-Mamba",
    license="apache-2.0",
    description="Spatial-Mamba: one raster scan with structure-aware (dilated depth-wise) state fusion, MLLA-style blocks",
    params_m={"spatial_mamba_tiny": 27, "spatial_mamba_small": 43, "spatial_mamba_base": 96},
    shrink_kwargs=dict(depths=(1, 1, 1, 1)),
))



class ConvNormAct(nn.Module):
    """Conv2d, optional BatchNorm, optional activation (official ``ConvLayer``; same parameter names)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 bias: bool = False, norm: bool = True, act_layer: Optional[Type[nn.Module]] = nn.ReLU) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(cout) if norm else None
        self.act = act_layer() if act_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class SpatialMambaStem(nn.Module):
    """Conv stem, stride 4: (B, in_chans, H, W) -> (B, H/4, W/4, C), or (B, C, H/4, W/4) with ``channel_first``."""

    def __init__(self, in_chans: int, dim: int, channel_first: bool = False) -> None:
        super().__init__()
        half = dim // 2
        self.channel_first = channel_first
        self.conv1 = ConvNormAct(in_chans, half, 3, stride=2)
        self.conv2 = nn.Sequential(ConvNormAct(half, half, 3), ConvNormAct(half, half, 3, act_layer=None))
        self.conv3 = nn.Sequential(ConvNormAct(half, dim * 4, 3, stride=2), ConvNormAct(dim * 4, dim, 1, act_layer=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.conv3(self.conv2(x) + x)
        # channels-last trunk: contiguous, so the blocks' depth-wise convs see a channels-last map (cuDNN's
        # NHWC kernel; an NCHW-ordered (B, H, W, C) view sent every cpe conv, add and norm through copies)
        return x if self.channel_first else x.permute(0, 2, 3, 1).contiguous()


class SpatialMambaDownsample(nn.Module):
    """Conv1x1 (dim -> ratio*out) ReLU, DW3x3/s2 ReLU, Conv1x1 (-> out) BN; halves H and W."""

    def __init__(self, dim: int, out_dim: int, ratio: float = 4.0, channel_first: bool = False) -> None:
        super().__init__()
        hidden = int(out_dim * ratio)
        self.channel_first = channel_first
        self.conv = nn.Sequential(
            ConvNormAct(dim, hidden, 1, bias=True, norm=False),
            ConvNormAct(hidden, hidden, 3, stride=2, groups=hidden, bias=True, norm=False),
            ConvNormAct(hidden, out_dim, 1, bias=True, act_layer=None),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x if self.channel_first else x.permute(0, 3, 1, 2))
        return x if self.channel_first else x.permute(0, 2, 3, 1)


class SpatialMambaBlock(nn.Module):
    """MLLA-style block with a structure-aware SSM.

    ``x += cpe1(x); x += DropPath(op(norm(x))); x += cpe2(x); x += DropPath(mlp(norm2(x)))``,
    where cpe1/cpe2 are depth-wise 3x3 convs (with bias).  Input/output
    (B, H, W, C), or (B, C, H, W) with ``channel_first``.
    """

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        channel_first: bool = False,
        ssm_d_state: int = 1,
        ssm_ratio: float = 2.0,
        ssm_dt_rank: Union[int, str] = "auto",
        ssm_drop_rate: float = 0.0,
        scan: str = "sasf",
        mlp_ratio: float = 4.0,
        mlp_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.channel_first = channel_first
        self.cpe1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = make_norm(dim, channel_first)
        self.op = SS2D(dim, d_state=ssm_d_state, ssm_ratio=ssm_ratio, dt_rank=ssm_dt_rank, d_conv=3, conv_bias=True,
                       gate=True, dropout=ssm_drop_rate, scan=scan, channel_first=channel_first)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.cpe2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm2 = make_norm(dim, channel_first)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=mlp_drop_rate, channel_first=channel_first)

    def _cpe(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        if self.channel_first:
            return conv2d_keep_layout(conv, x)
        return conv2d_keep_layout(conv, x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def _add_cpe(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """``x + conv(x)``; one Triton pass for CUDA inference on the channels-last trunk."""
        x_nchw = x if self.channel_first else x.permute(0, 3, 1, 2)
        if depthwise3x3_fused_applies(conv, x_nchw):
            y = depthwise3x3_fused(conv, x_nchw, residual=True)
            return y if self.channel_first else y.permute(0, 2, 3, 1)
        return x + self._cpe(conv, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._add_cpe(self.cpe1, x)
        x = x + self.drop_path(self.op(self.norm(x)))
        x = self._add_cpe(self.cpe2, x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SpatialMamba(VSSM):
    """Spatial-Mamba backbone (timm model API inherited from :class:`~vmamba_zoo.models.vmamba.VSSM`).

    Args:
        in_chans: input image channels.
        num_classes: classifier classes (0: ``forward`` returns pooled features).
        global_pool: head pooling (``'avg'``, ``''``, ...).
        depths: blocks per stage.
        dims: widths per stage, or an int C expanded to (C, 2C, 4C, 8C).
        ssm_d_state: SSM state size (Spatial-Mamba: 1).
        ssm_ratio, ssm_dt_rank, ssm_drop_rate: SS2D settings.
        scan: scan pattern of the SS2D (``"sasf"``).
        mlp_ratio, mlp_drop_rate: MLP hidden ratio and dropout.
        downsample_ratio: hidden expansion of the downsampling (8C hidden for 2C out: 4).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linear over all blocks (official: 0.2 / 0.3 / 0.5).
        channel_first: run the trunk in (B, C, H, W) instead of the official (B, H, W, C);
            parameters are identical.

    Shapes: input (B, in_chans, H, W); ``forward_features`` returns the normalised
    last stage in ``output_fmt`` ((B, H/32, W/32, C) by default).
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (2, 4, 8, 4),
        dims: Union[int, Sequence[int]] = 64,
        ssm_d_state: int = 1,
        ssm_ratio: float = 2.0,
        ssm_dt_rank: Union[int, str] = "auto",
        ssm_drop_rate: float = 0.0,
        scan: str = "sasf",
        mlp_ratio: float = 4.0,
        mlp_drop_rate: float = 0.0,
        downsample_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        channel_first: bool = False,
    ) -> None:
        # VSSM.__init__ is not run: this class builds its own trunk and only reuses
        # VSSM's timm API methods, which need stem/stages/norm/head/channel_first/output_fmt.
        nn.Module.__init__(self)
        num_stages = len(depths)
        dims = stage_dims(dims, num_stages)
        self.num_classes = num_classes
        self.channel_first = channel_first
        self.output_fmt = "NCHW" if channel_first else "NHWC"
        self.num_features = self.head_hidden_size = dims[-1]
        self.drop_rate = drop_rate

        self.stem = SpatialMambaStem(in_chans, dims[0], channel_first=channel_first)
        dpr = [r.tolist() for r in torch.linspace(0, drop_path_rate, sum(depths), device="cpu").split(list(depths))]
        stages = []
        self.feature_info = []
        reduction = 4
        for i in range(num_stages):
            ds = None
            if i > 0:
                reduction *= 2
                ds = SpatialMambaDownsample(dims[i - 1], dims[i], ratio=downsample_ratio, channel_first=channel_first)
            blocks = [
                SpatialMambaBlock(dims[i], drop_path=dpr[i][j], channel_first=channel_first, ssm_d_state=ssm_d_state,
                                  ssm_ratio=ssm_ratio, ssm_dt_rank=ssm_dt_rank, ssm_drop_rate=ssm_drop_rate, scan=scan,
                                  mlp_ratio=mlp_ratio, mlp_drop_rate=mlp_drop_rate)
                for j in range(depths[i])
            ]
            stages.append(VSSStage(ds, blocks))
            self.feature_info.append(dict(num_chs=dims[i], reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = make_norm(self.num_features, channel_first)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                   input_fmt=self.output_fmt)
        self.apply(self._init_weights)


# ------------------------------------------------------------------ weights
_STACKED = ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds")


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: SpatialMamba) -> Dict[str, torch.Tensor]:
    """Convert an official Spatial-Mamba checkpoint to this model's keys (applied at load time).

    Handles the ``{'model': ...}`` training wrapper, ``module.`` prefixes,
    ``patch_embed.`` -> ``stem.``, ``layers.i.blocks.j.{ln_1,self_attention,ln_2}`` ->
    ``stages.i.blocks.j.{norm,op,norm2}``, ``self_attention.state_fusion.`` ->
    ``op.scan_pattern.``, ``layers.i.downsample`` -> ``stages.{i+1}.downsample``,
    ``head.`` -> ``head.fc.``, the single-route SSM tensors (``x_proj_weight``
    (R+2N, D) -> (1, R+2N, D) etc.) and drops the detection backbones'
    ``outnorm{i}`` norms.  A state dict already in this model's format is returned
    unchanged.
    """
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    if any(k.startswith("stem.") for k in state_dict):
        return state_dict
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = re.sub(r"^module\.", "", key)
        if key.startswith("outnorm"):
            continue
        key = re.sub(r"^patch_embed\.", "stem.", key)
        key = re.sub(r"^layers\.(\d+)\.blocks\.", r"stages.\1.blocks.", key)
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample.", key)
        key = key.replace(".self_attention.state_fusion.", ".op.scan_pattern.")
        key = key.replace(".self_attention.", ".op.").replace(".ln_1.", ".norm.").replace(".ln_2.", ".norm2.")
        key = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)
        out[key] = value

    target = model.state_dict()
    for key, value in out.items():
        want = target.get(key)
        if want is not None and key.endswith(_STACKED) and value.shape != want.shape and value.numel() == want.numel():
            out[key] = value.reshape(want.shape)
    return out


#: Google Drive ids of the official ImageNet-1k checkpoints (README of the official repository).
_DRIVE_IDS = {
    "spatial_mamba_tiny": "19kXoqGSTuKKs4AHbdUSrdKZTwTWenLIW",
    "spatial_mamba_small": "1Wb3sYoWLpgmWrmHMYKwdgDwGPZaqM28O",
    "spatial_mamba_base": "1k8dHp2QRCOqBSgAi36YkhZp_O8LqOPjM",
}


def _drive_url(file_id: str) -> str:
    """Direct-download URL of a public Google Drive file (the hub caches it as ``<arch>.<tag>.pth``)."""
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


def _create_spatial_mamba(variant: str, pretrained: bool = False, **kwargs) -> SpatialMamba:
    return create_zoo_model(SpatialMamba, variant, pretrained, checkpoint_filter_fn, **kwargs)


def _cfg(url: str = "", **kwargs) -> Dict[str, Any]:
    return {
        "url": url,
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1.conv", "classifier": "head.fc",
        "license": "apache-2.0", "paper_ids": "arXiv:2410.15091",
        "paper_name": "Spatial-Mamba: Effective Visual State Space Models via Structure-Aware State Fusion",
        "origin_url": "https://github.com/EdwardChasel/Spatial-Mamba",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "spatial_mamba_tiny.in1k": _cfg(_drive_url(_DRIVE_IDS["spatial_mamba_tiny"]), notes=("83.5 top-1",)),
    "spatial_mamba_small.in1k": _cfg(_drive_url(_DRIVE_IDS["spatial_mamba_small"]), notes=("84.6 top-1",)),
    "spatial_mamba_base.in1k": _cfg(_drive_url(_DRIVE_IDS["spatial_mamba_base"]), notes=("85.3 top-1",)),
    "test_spatial_mamba.untrained": _cfg(input_size=(3, 64, 64), pool_size=(2, 2), paper_ids=None, paper_name=None),
})


@register_model
def spatial_mamba_tiny(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Spatial-Mamba-T: depths 2-4-8-4, dims 64-128-256-512; 27M params, 4.5 GFLOPs, 83.5 top-1."""
    model_args = dict(depths=(2, 4, 8, 4), dims=64)
    return _create_spatial_mamba("spatial_mamba_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def spatial_mamba_small(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Spatial-Mamba-S: depths 2-4-21-5, dims 64-128-256-512; 43M params, 7.1 GFLOPs, 84.6 top-1."""
    model_args = dict(depths=(2, 4, 21, 5), dims=64)
    return _create_spatial_mamba("spatial_mamba_small", pretrained, **dict(model_args, **kwargs))


@register_model
def spatial_mamba_base(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Spatial-Mamba-B: depths 2-4-21-5, dims 96-192-384-768; 96M params, 15.8 GFLOPs, 85.3 top-1."""
    model_args = dict(depths=(2, 4, 21, 5), dims=96)
    return _create_spatial_mamba("spatial_mamba_base", pretrained, **dict(model_args, **kwargs))


@register_model
def test_spatial_mamba(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Tiny Spatial-Mamba for fast tests: depths 1-1-1-1, dims 16-32-64-128."""
    model_args = dict(depths=(1, 1, 1, 1), dims=16)
    return _create_spatial_mamba("test_spatial_mamba", pretrained, **dict(model_args, **kwargs))
