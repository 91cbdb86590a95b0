"""EfficientVMamba: atrous selective scan for light-weight visual Mamba.

Paper: "EfficientVMamba: Atrous Selective Scan for Light Weight Visual Mamba",
Xiaohuan Pei, Tao Huang, Chang Xu, AAAI 2025 (arXiv:2403.09977).  Official code
(Apache-2.0): https://github.com/TerryPei/EfficientVMamba; ImageNet-1k weights on
the Hugging Face Hub (``TerryPei/EfficientVMamba-{Tiny,Small,Base}``).

Architecture ("inverted insertion"):

* stem: Conv 4x4/s4 + LayerNorm; PatchMerging (2x2 concat, LN, Linear) between stages;
* stages 1-2: EVSS blocks -- ``x + DropPath(SE(SS2D_atrous(LN(x))) + SE(ConvBranch(LN(x))))``
  with one *shared* channel-attention module ``SE`` (BiAttn) for both branches and
  no MLP; the SS2D is VMamba v0's (gated, d_state 16, ssm_ratio 2) with the
  atrous scan (:class:`vmamba_zoo.scan.AtrousScan`);
* stages 3-4: MobileNetV2 inverted residuals (expand 4, squeeze-excite 0.125, ReLU);
* head: LayerNorm, global average pool, Linear.

This is a timm-style re-implementation on the zoo's SS2D mixer and kernels; the
timm model API (``forward_features``/``forward_head``/``forward_intermediates``,
``features_only``, gradient checkpointing, classifier reset) is VMamba's
(:class:`vmamba_zoo.models.vmamba.VSSM`), and official checkpoints convert at
load time (:func:`checkpoint_filter_fn`).
"""
from __future__ import annotations

import re
from typing import Any, Dict, Sequence, Union

import torch
from torch import nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath
from timm.models import generate_default_cfgs, register_model

from ..layers import SS2D, ChannelLinear, LayerNorm, make_norm
from ._zoo import ModelFamily, create_zoo_model, register_family, stage_dims
from .vmamba import VSSM, PatchEmbed, PatchMerging2D, VSSStage

__all__ = ["EfficientVSSM", "EVSSBlock", "BiAttn", "InvertedResidual", "checkpoint_filter_fn"]

FAMILY = register_family(ModelFamily(
    name="efficient_vmamba",
    module="efficient_vmamba",
    scan_patterns=("atrous",),
    paper="arXiv:2403.09977",
    origin_url="https://github.com/TerryPei/EfficientVMamba",
    license="apache-2.0",
    description="EfficientVMamba: atrous (stride-2 sub-grid) SS2D + conv branch in stages 1-2, inverted residuals in 3-4",
    # training logs of the official checkpoints: 6.494M / 11.274M / 33.717M
    params_m={"efficient_vmamba_tiny": 6.494, "efficient_vmamba_small": 11.274, "efficient_vmamba_base": 33.717},
    shrink_kwargs=dict(depths=(1, 1, 1, 1)),
))



class BiAttn(nn.Module):
    """Channel attention of the EVSS block (official ``BiAttn``): ``x * sigmoid(W2 GELU(W1 mean(LN(x))))``.

    The gate is computed from the LayerNorm-ed, spatially averaged input and
    multiplies the *un-normalised* input.  (B, H, W, C), or (B, C, H, W) with
    ``channel_first``.
    """

    def __init__(self, dim: int, act_ratio: float = 0.125, channel_first: bool = False) -> None:
        super().__init__()
        reduced = int(dim * act_ratio)
        if reduced <= 0:
            raise ValueError(f"BiAttn: dim={dim} with act_ratio={act_ratio} leaves no hidden channels")
        self.channel_first = channel_first
        self.norm = make_norm(dim, channel_first)
        self.global_reduce = ChannelLinear(dim, reduced, channel_first=channel_first)
        self.act = nn.GELU()
        self.channel_select = ChannelLinear(reduced, dim, channel_first=channel_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = (2, 3) if self.channel_first else (1, 2)
        pooled = self.norm(x).mean(dims, keepdim=True)
        return x * torch.sigmoid(self.channel_select(self.act(self.global_reduce(pooled))))


class EVSSBlock(nn.Module):
    """Efficient VSS block: a global (atrous SS2D) and a local (conv) branch gated by one shared SE.

    ``out = x + DropPath(SE(SS2D(LN(x))) + SE(Conv1x1(GELU(BN(DWConv3x3(LN(x)))))))``.
    Input/output (B, H, W, C), or (B, C, H, W) with ``channel_first``.
    """

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        channel_first: bool = False,
        ssm_d_state: int = 16,
        ssm_ratio: float = 2.0,
        ssm_dt_rank: Union[int, str] = "auto",
        ssm_conv: int = 3,
        ssm_conv_bias: bool = True,
        ssm_drop_rate: float = 0.0,
        scan: str = "atrous",
        se_ratio: float = 0.125,
    ) -> None:
        super().__init__()
        self.channel_first = channel_first
        self.norm = make_norm(dim, channel_first)
        self.op = SS2D(dim, d_state=ssm_d_state, ssm_ratio=ssm_ratio, dt_rank=ssm_dt_rank, d_conv=ssm_conv,
                       conv_bias=ssm_conv_bias, gate=True, dropout=ssm_drop_rate, scan=scan,
                       channel_first=channel_first)
        self.conv_branch = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.BatchNorm2d(dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 1),
        )
        self.se = BiAttn(dim, se_ratio, channel_first=channel_first)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        local = self.conv_branch(h if self.channel_first else h.permute(0, 3, 1, 2))
        if not self.channel_first:
            local = local.permute(0, 2, 3, 1)
        return x + self.drop_path(self.se(self.op(h)) + self.se(local))


class SqueezeExcite(nn.Module):
    """MobileNet squeeze-excite on (B, C, H, W): ``x * sigmoid(conv_expand(ReLU(conv_reduce(mean(x)))))``."""

    def __init__(self, dim: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(dim, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv_expand(self.act(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


def _conv_bn(cin: int, cout: int, kernel_size: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual with SE (stages 3-4): 1x1 expand - DW3x3 - SE - 1x1 project, + x.

    Convs without bias, each followed by BatchNorm (ReLU after the first two).
    Input/output (B, H, W, C), or (B, C, H, W) with ``channel_first``.
    """

    def __init__(self, dim: int, expand_ratio: float = 4.0, se_ratio: float = 0.125, drop_path: float = 0.0,
                 channel_first: bool = False) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.channel_first = channel_first
        self.conv_pw = _conv_bn(dim, hidden)
        self.conv_dw = _conv_bn(hidden, hidden, 3, groups=hidden)
        self.se = SqueezeExcite(hidden, max(1, int(hidden * se_ratio)))
        self.conv_pw2 = _conv_bn(hidden, dim, act=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.channel_first else x.permute(0, 3, 1, 2)
        h = self.conv_pw2(self.se(self.conv_dw(self.conv_pw(h))))
        if not self.channel_first:
            h = h.permute(0, 2, 3, 1)
        return x + self.drop_path(h)


class EfficientVSSM(VSSM):
    """EfficientVMamba backbone (timm model API inherited from :class:`~vmamba_zoo.models.vmamba.VSSM`).

    Args:
        in_chans: input image channels.
        num_classes: classifier classes (0: ``forward`` returns pooled features).
        global_pool: head pooling (``'avg'``, ``''``, ...).
        depths: blocks per stage.
        dims: widths per stage, or an int C expanded to (C, 2C, 4C, 8C).
        num_ssm_stages: the first stages use EVSS blocks, the rest inverted residuals (official: 2).
        ssm_d_state, ssm_ratio, ssm_dt_rank, ssm_conv, ssm_conv_bias, ssm_drop_rate: SS2D settings.
        scan: scan pattern of the SS2D (``"atrous"``).
        se_ratio: hidden ratio of the EVSS block's shared channel attention.
        ir_expand_ratio, ir_se_ratio: inverted-residual expansion and squeeze-excite ratios.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linear over all blocks (official logs: 0.1).
        patch_size: stem stride.
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
        depths: Sequence[int] = (2, 2, 4, 2),
        dims: Union[int, Sequence[int]] = 48,
        num_ssm_stages: int = 2,
        ssm_d_state: int = 16,
        ssm_ratio: float = 2.0,
        ssm_dt_rank: Union[int, str] = "auto",
        ssm_conv: int = 3,
        ssm_conv_bias: bool = True,
        ssm_drop_rate: float = 0.0,
        scan: str = "atrous",
        se_ratio: float = 0.125,
        ir_expand_ratio: float = 4.0,
        ir_se_ratio: float = 0.125,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        patch_size: int = 4,
        channel_first: bool = False,
    ) -> None:
        # VSSM.__init__ is not run: this class builds its own trunk and only reuses
        # VSSM's timm API methods, which need stem/stages/norm/head/channel_first/output_fmt.
        nn.Module.__init__(self)
        num_stages = len(depths)
        dims = stage_dims(dims, num_stages)
        if not 0 <= num_ssm_stages <= num_stages:
            raise ValueError(f"num_ssm_stages must be in [0, {num_stages}], got {num_ssm_stages}")
        self.num_classes = num_classes
        self.channel_first = channel_first
        self.output_fmt = "NCHW" if channel_first else "NHWC"
        self.num_features = self.head_hidden_size = dims[-1]
        self.drop_rate = drop_rate

        self.stem = PatchEmbed(in_chans, dims[0], patch_size=patch_size, channel_first=channel_first)
        dpr = [r.tolist() for r in torch.linspace(0, drop_path_rate, sum(depths), device="cpu").split(list(depths))]
        stages = []
        self.feature_info = []
        reduction = patch_size
        for i in range(num_stages):
            ds = None
            if i > 0:
                reduction *= 2
                ds = PatchMerging2D(dims[i - 1], dims[i], channel_first=channel_first)
            if i < num_ssm_stages:
                blocks = [
                    EVSSBlock(dims[i], drop_path=dpr[i][j], channel_first=channel_first, ssm_d_state=ssm_d_state,
                              ssm_ratio=ssm_ratio, ssm_dt_rank=ssm_dt_rank, ssm_conv=ssm_conv,
                              ssm_conv_bias=ssm_conv_bias, ssm_drop_rate=ssm_drop_rate, scan=scan, se_ratio=se_ratio)
                    for j in range(depths[i])
                ]
            else:
                blocks = [
                    InvertedResidual(dims[i], expand_ratio=ir_expand_ratio, se_ratio=ir_se_ratio,
                                     drop_path=dpr[i][j], channel_first=channel_first)
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


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: EfficientVSSM) -> Dict[str, torch.Tensor]:
    """Convert an official EfficientVMamba checkpoint to this model's keys (applied at load time).

    Handles the ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers, ``module.`` /
    ``module.module.`` prefixes (DDP-in-DDP training), ``patch_embed.{0,2}``, the
    ``layers.i.blocks``/``layers.i.downsample`` layout of the EVSS stages, the
    ``layers.i.{1..depth}`` / ``layers.i.{depth+2}`` Sequential layout (around two
    ``Permute`` modules) of the inverted-residual stages, ``classifier.{norm,head}``
    and the MobileNet SE's names.  The downsample at the end of official stage i
    becomes the start of stage i+1 here.  A state dict already in this model's
    format is returned unchanged.
    """
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    if any(k.startswith("stem.") for k in state_dict):
        return state_dict
    depths = [len(stage.blocks) for stage in model.stages]
    ssm_stages = sum(isinstance(stage.blocks[0], EVSSBlock) for stage in model.stages if len(stage.blocks))

    def _ir_key(m: "re.Match[str]") -> str:
        i, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        if 1 <= j <= depths[i]:
            return f"stages.{i}.blocks.{j - 1}.{rest}"
        if j == depths[i] + 2:
            return f"stages.{i + 1}.downsample.{rest}"
        raise KeyError(f"unexpected official key layers.{i}.{j}.{rest}")

    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = re.sub(r"^(module\.)+", "", key)
        key = re.sub(r"^patch_embed\.0\.", "stem.proj.", key)
        key = re.sub(r"^patch_embed\.2\.", "stem.norm.", key)
        key = re.sub(r"^layers\.(\d+)\.blocks\.", r"stages.\1.blocks.", key)
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample.", key)
        m = re.match(r"^layers\.(\d+)\.(\d+)\.(.*)$", key)
        if m and int(m.group(1)) >= ssm_stages:
            key = _ir_key(m)
        key = re.sub(r"^classifier\.norm\.", "norm.", key)
        key = re.sub(r"^classifier\.head\.", "head.fc.", key)
        out[key] = value

    target = model.state_dict()
    for key, value in out.items():
        want = target.get(key)
        if want is not None and key.endswith(_STACKED) and value.shape != want.shape and value.numel() == want.numel():
            out[key] = value.reshape(want.shape)
    return out


def _create_efficient_vssm(variant: str, pretrained: bool = False, **kwargs) -> EfficientVSSM:
    return create_zoo_model(EfficientVSSM, variant, pretrained, checkpoint_filter_fn, **kwargs)


_HF = "https://huggingface.co/TerryPei/EfficientVMamba-{}/resolve/main/efficient_vmamba_{}.ckpt"


def _cfg(url: str = "", **kwargs) -> Dict[str, Any]:
    return {
        "url": url,
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.proj", "classifier": "head.fc",
        "license": "apache-2.0", "paper_ids": "arXiv:2403.09977",
        "paper_name": "EfficientVMamba: Atrous Selective Scan for Light Weight Visual Mamba",
        "origin_url": "https://github.com/TerryPei/EfficientVMamba",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "efficient_vmamba_tiny.in1k": _cfg(_HF.format("Tiny", "tiny"), notes=("76.5 top-1",)),
    "efficient_vmamba_small.in1k": _cfg(_HF.format("Small", "small"), notes=("78.7 top-1",)),
    "efficient_vmamba_base.in1k": _cfg(_HF.format("Base", "base"), notes=("81.8 top-1",)),
    "test_efficient_vmamba.untrained": _cfg(input_size=(3, 64, 64), pool_size=(2, 2), paper_ids=None,
                                            paper_name=None),
})


@register_model
def efficient_vmamba_tiny(pretrained: bool = False, **kwargs) -> EfficientVSSM:
    """EfficientVMamba-T: depths 2-2-4-2, dims 48-96-192-384; 6.5M params, 0.8 GFLOPs, 76.5 top-1."""
    model_args = dict(depths=(2, 2, 4, 2), dims=48)
    return _create_efficient_vssm("efficient_vmamba_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def efficient_vmamba_small(pretrained: bool = False, **kwargs) -> EfficientVSSM:
    """EfficientVMamba-S: depths 2-2-4-2, dims 64-128-256-512; 11.3M params, 1.3 GFLOPs, 78.7 top-1.

    (Widths as in the official training log; the repository's yaml says 96.)
    """
    model_args = dict(depths=(2, 2, 4, 2), dims=64)
    return _create_efficient_vssm("efficient_vmamba_small", pretrained, **dict(model_args, **kwargs))


@register_model
def efficient_vmamba_base(pretrained: bool = False, **kwargs) -> EfficientVSSM:
    """EfficientVMamba-B: depths 2-2-9-2, dims 96-192-384-768; 33.7M params, 4.0 GFLOPs, 81.8 top-1."""
    model_args = dict(depths=(2, 2, 9, 2), dims=96)
    return _create_efficient_vssm("efficient_vmamba_base", pretrained, **dict(model_args, **kwargs))


@register_model
def test_efficient_vmamba(pretrained: bool = False, **kwargs) -> EfficientVSSM:
    """Tiny EfficientVMamba for fast tests: depths 1-1-1-1, dims 16-32-64-128, d_state 4."""
    model_args = dict(depths=(1, 1, 1, 1), dims=16, ssm_d_state=4)
    return _create_efficient_vssm("test_efficient_vmamba", pretrained, **dict(model_args, **kwargs))
