"""VMamba: Visual State Space Model.

Paper: "VMamba: Visual State Space Model", Yue Liu, Yunjie Tian, Yuzhong Zhao,
Hongtian Yu, Lingxi Xie, Yaowei Wang, Qixiang Ye, Jianbin Jiao, Yunfan Liu,
NeurIPS 2024 (arXiv:2401.10166).  Official code and weights (MIT licence):
https://github.com/MzeroMiko/VMamba

Two generations are provided, both with VMamba's four-route cross scan:

* ``vanilla_vmamba_{tiny,small,base}`` (v0): d_state 16, ssm_ratio 2, gated
  SS2D with a biased depth-wise conv, no MLP, 4x4 patch embed, PatchMerging
  downsampling, channels-last.
* ``vmamba_{tiny_s2l5,small_s2l15,base_s2l15,tiny_s1l8,small_s1l20,base_s1l20}``
  (v2): d_state 1, no gate, conv without bias, MLP ratio 4, two-conv stem,
  3x3/s2 conv downsampling, channels-first LayerNorm.

This is a timm-style re-implementation on the zoo's :class:`~vmamba_zoo.layers.SS2D`
mixer and selective-scan kernels (CPU/Triton, no CUDA extension to build).  Added
over the official code: timm's model API (pretrained cfgs, ``features_only``,
``forward_intermediates``, gradient checkpointing, classifier reset), a layout
switch (``channel_first``) for every variant, load-time conversion of official
checkpoints (:func:`checkpoint_filter_fn`), and downsampling placed at the start of
the next stage so that each stage's output is its (pre-downsample) feature map.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath, trunc_normal_
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..layers import SS2D, ChannelLinear, LayerNorm, LayerNorm2d, make_norm
from ..layers.conv import conv2d_keep_layout
from ..layers.fused_block import fast_branches_apply, vss_block
from ._zoo import ModelFamily, create_zoo_model, register_family, stage_dims

__all__ = ["VSSM", "VSSBlock", "VSSStage", "checkpoint_filter_fn"]

FAMILY = register_family(ModelFamily(
    name="vmamba",
    module="vmamba",
    scan_patterns=("cross",),
    paper="arXiv:2401.10166",
    origin_url="https://github.com/MzeroMiko/VMamba",
    license="mit",
    description="VMamba (v0 'vanilla' and v2) hierarchical SS2D backbones, four-route cross scan",
    params_m={
        "vanilla_vmamba_tiny": 23, "vanilla_vmamba_small": 44, "vanilla_vmamba_base": 76,
        "vmamba_tiny_s2l5": 31, "vmamba_small_s2l15": 50, "vmamba_base_s2l15": 89,
        "vmamba_tiny_s1l8": 30, "vmamba_small_s1l20": 49, "vmamba_base_s1l20": 87,
    },
    shrink_kwargs=dict(depths=(1, 1, 1, 1)),
))



def _to_nchw(x: torch.Tensor, channel_first: bool) -> torch.Tensor:
    return x if channel_first else x.permute(0, 3, 1, 2)


def _from_nchw(x: torch.Tensor, channel_first: bool) -> torch.Tensor:
    return x if channel_first else x.permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """v1 stem: Conv patch x patch / stride patch, then LayerNorm.

    (B, in_chans, H, W) -> (B, C, H/p, W/p) or (B, H/p, W/p, C).
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int = 4, channel_first: bool = False) -> None:
        super().__init__()
        self.channel_first = channel_first
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = make_norm(dim, channel_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_from_nchw(self.proj(x), self.channel_first))


class ConvStem(nn.Module):
    """v2 stem: Conv3x3/s2 (C/2) - LN - GELU - Conv3x3/s2 (C) - LN.

    (B, in_chans, H, W) -> (B, C, H/4, W/4) or (B, H/4, W/4, C).
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int = 4, channel_first: bool = False) -> None:
        super().__init__()
        if patch_size != 4:
            raise ValueError(f"ConvStem (patch-embed v2) supports patch_size=4 only, got {patch_size}")
        self.channel_first = channel_first
        self.conv1 = nn.Conv2d(in_chans, dim // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = LayerNorm2d(dim // 2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1)
        self.norm2 = make_norm(dim, channel_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(conv2d_keep_layout(self.conv1, x)))
        return self.norm2(_from_nchw(conv2d_keep_layout(self.conv2, x), self.channel_first))


class PatchMerging2D(nn.Module):
    """v1 downsample: gather 2x2 neighbours (zero-padding odd sizes) - LN(4C) - Linear 4C -> C_out.

    Channel order of the gather is VMamba's: (0,0), (1,0), (0,1), (1,1).
    """

    def __init__(self, dim: int, out_dim: int, channel_first: bool = False) -> None:
        super().__init__()
        self.channel_first = channel_first
        self.norm = make_norm(4 * dim, channel_first)
        self.reduction = ChannelLinear(4 * dim, out_dim, bias=False, channel_first=channel_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_first:
            h, w = x.shape[-2:]
            x = F.pad(x, (0, w % 2, 0, h % 2))
            x = torch.cat([x[..., 0::2, 0::2], x[..., 1::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 1::2]], dim=1)
        else:
            h, w = x.shape[1:3]
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class ConvDownsample(nn.Module):
    """v2/v3 downsample: Conv (2x2/s2 for v2, 3x3/s2/p1 for v3) then LayerNorm."""

    def __init__(self, dim: int, out_dim: int, kernel_size: int = 3, channel_first: bool = False) -> None:
        super().__init__()
        if kernel_size not in (2, 3):
            raise ValueError(f"ConvDownsample kernel_size must be 2 (v2) or 3 (v3), got {kernel_size}")
        self.channel_first = channel_first
        self.conv = nn.Conv2d(dim, out_dim, kernel_size=kernel_size, stride=2, padding=kernel_size // 2 if kernel_size == 3 else 0)
        self.norm = make_norm(out_dim, channel_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = conv2d_keep_layout(self.conv, _to_nchw(x, self.channel_first))
        return self.norm(_from_nchw(x, self.channel_first))


class Mlp(nn.Module):
    """fc1 - act - drop - fc2 - drop over the channel axis of either layout."""

    def __init__(self, dim: int, hidden: int, act_layer: Type[nn.Module] = nn.GELU, drop: float = 0.0,
                 channel_first: bool = False) -> None:
        super().__init__()
        self.fc1 = ChannelLinear(dim, hidden, channel_first=channel_first)
        self.act = act_layer()
        self.fc2 = ChannelLinear(hidden, dim, channel_first=channel_first)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.act, nn.GELU) and self.act.approximate == "none":
            hidden = self.fc1(x, activation="gelu")  # one oneDNN kernel in fp32 CPU inference
        else:
            hidden = self.act(self.fc1(x))
        return self.drop(self.fc2(self.drop(hidden)))


class VSSBlock(nn.Module):
    """Pre-norm residual block: ``x + DropPath(SS2D(norm(x)))`` then ``x + DropPath(MLP(norm2(x)))``.

    ``mlp_ratio <= 0`` drops the MLP (v0).  Input/output (B, H, W, C), or
    (B, C, H, W) with ``channel_first``.

    On CUDA, a channels-last block in the v2 configuration runs each branch as
    one unit (:mod:`vmamba_zoo.layers.fused_block`: one autograd node with a
    written-out backward); set ``use_fast_branches = False`` (class or instance
    attribute) to run the modules one by one.
    """

    use_fast_branches: bool = True

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
        ssm_gate: bool = True,
        ssm_drop_rate: float = 0.0,
        scan: str = "cross",
        mlp_ratio: float = 4.0,
        mlp_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm = make_norm(dim, channel_first)
        self.op = SS2D(
            dim, d_state=ssm_d_state, ssm_ratio=ssm_ratio, dt_rank=ssm_dt_rank, d_conv=ssm_conv,
            conv_bias=ssm_conv_bias, gate=ssm_gate, dropout=ssm_drop_rate, scan=scan, channel_first=channel_first,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if mlp_ratio > 0:
            self.norm2 = make_norm(dim, channel_first)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=mlp_drop_rate, channel_first=channel_first)
        else:
            self.norm2 = None
            self.mlp = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_fast_branches and fast_branches_apply(self, x):
            # the block as one unit (one autograd node when training): same arithmetic, less host time
            return vss_block(self, x)
        x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class VSSStage(nn.Module):
    """Optional downsample (from the previous stage's width) followed by ``depth`` VSS blocks."""

    def __init__(self, downsample: Optional[nn.Module], blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class VSSM(nn.Module):
    """VMamba hierarchical backbone (timm model API).

    Args:
        in_chans: input image channels.
        num_classes: classifier classes (0: no classifier, ``forward`` returns pooled features).
        global_pool: pooling of the classifier head (``'avg'``, ``''`` for none, ...).
        depths: blocks per stage.
        dims: widths per stage, or an int C expanded to (C, 2C, 4C, 8C).
        ssm_d_state, ssm_ratio, ssm_dt_rank, ssm_conv, ssm_conv_bias, ssm_gate, ssm_drop_rate:
            :class:`~vmamba_zoo.layers.SS2D` settings.
        scan: scan pattern of every mixer (VMamba: ``"cross"``).
        mlp_ratio: MLP hidden ratio; <= 0 removes the MLP.
        mlp_drop_rate: dropout inside the MLP.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic-depth rate, linear over all blocks.  The official
            training recipes use 0.2 (tiny), 0.3 (small), 0.5-0.6 (base).
        patch_size: stem stride.
        stem: ``"v1"`` (Conv p x p + LN) or ``"v2"`` (two Conv3x3/s2).
        downsample: ``"v1"`` (PatchMerging2D), ``"v2"`` (Conv2x2/s2), ``"v3"`` (Conv3x3/s2).
        channel_first: run the trunk in (B, C, H, W) (VMamba v2's "ln2d") instead of (B, H, W, C).
            The parameters are identical in both layouts.

    Shapes: input (B, in_chans, H, W); ``forward_features`` returns the normalised last stage,
    (B, C, H/32, W/32) if ``channel_first`` else (B, H/32, W/32, C) (see ``output_fmt``).
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (2, 2, 9, 2),
        dims: Union[int, Sequence[int]] = 96,
        ssm_d_state: int = 16,
        ssm_ratio: float = 2.0,
        ssm_dt_rank: Union[int, str] = "auto",
        ssm_conv: int = 3,
        ssm_conv_bias: bool = True,
        ssm_gate: bool = True,
        ssm_drop_rate: float = 0.0,
        scan: str = "cross",
        mlp_ratio: float = 4.0,
        mlp_drop_rate: float = 0.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        patch_size: int = 4,
        stem: str = "v1",
        downsample: str = "v1",
        channel_first: bool = False,
    ) -> None:
        super().__init__()
        num_stages = len(depths)
        dims = stage_dims(dims, num_stages)
        if stem not in ("v1", "v2"):
            raise ValueError(f"stem must be 'v1' or 'v2', got {stem!r}")
        if downsample not in ("v1", "v2", "v3"):
            raise ValueError(f"downsample must be 'v1', 'v2' or 'v3', got {downsample!r}")
        self.num_classes = num_classes
        self.channel_first = channel_first
        self.output_fmt = "NCHW" if channel_first else "NHWC"
        self.num_features = self.head_hidden_size = dims[-1]
        self.drop_rate = drop_rate

        stem_cls = PatchEmbed if stem == "v1" else ConvStem
        self.stem = stem_cls(in_chans, dims[0], patch_size=patch_size, channel_first=channel_first)

        dpr = [r.tolist() for r in torch.linspace(0, drop_path_rate, sum(depths), device="cpu").split(list(depths))]
        stages = []
        self.feature_info = []
        reduction = patch_size
        for i in range(num_stages):
            ds = None
            if i > 0:
                reduction *= 2
                if downsample == "v1":
                    ds = PatchMerging2D(dims[i - 1], dims[i], channel_first=channel_first)
                else:
                    ds = ConvDownsample(dims[i - 1], dims[i], kernel_size=2 if downsample == "v2" else 3,
                                        channel_first=channel_first)
            blocks = [
                VSSBlock(
                    dims[i], drop_path=dpr[i][j], channel_first=channel_first, ssm_d_state=ssm_d_state,
                    ssm_ratio=ssm_ratio, ssm_dt_rank=ssm_dt_rank, ssm_conv=ssm_conv, ssm_conv_bias=ssm_conv_bias,
                    ssm_gate=ssm_gate, ssm_drop_rate=ssm_drop_rate, scan=scan, mlp_ratio=mlp_ratio,
                    mlp_drop_rate=mlp_drop_rate,
                )
                for j in range(depths[i])
            ]
            stages.append(VSSStage(ds, blocks))
            self.feature_info.append(dict(num_chs=dims[i], reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = make_norm(self.num_features, channel_first)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                   input_fmt=self.output_fmt)
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

    # ------------------------------------------------------------ timm API
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay."""
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Names of parameters without weight decay: SSM ``A_logs``/``Ds``, norms and biases."""
        skip = set()
        for name, param in self.named_parameters():
            if param.ndim <= 1 or name.endswith((".A_logs", ".Ds", ".bias")):
                skip.add(name)
        return skip

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward returning stage outputs.

        Args:
            x: (B, in_chans, H, W).
            indices: take the last n stages if an int, the listed stages if a sequence, all if None.
            norm: apply the final norm to the last stage's intermediate.
            stop_early: stop after the last stage needed.
            output_fmt: ``'NCHW'`` or ``'NHWC'`` for the intermediates.
            intermediates_only: return only the intermediates.
        Returns:
            (final features as in ``forward_features``, list of intermediates), or the list.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last_idx = len(self.stages) - 1
        intermediates = []
        x = self.stem(x)
        stages = self.stages if (torch.jit.is_scripting() or not stop_early) else self.stages[:max_index + 1]
        for feat_idx, stage in enumerate(stages):
            x = stage(x)
            if feat_idx in take_indices:
                x_inter = self.norm(x) if norm and feat_idx == last_idx else x
                if output_fmt == "NCHW":
                    x_inter = _to_nchw(x_inter, self.channel_first)
                elif self.channel_first:
                    x_inter = x_inter.permute(0, 2, 3, 1)
                intermediates.append(x_inter.contiguous())
        if intermediates_only:
            return intermediates
        if feat_idx == last_idx:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: Union[int, List[int]] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages (and optionally norm/head) not needed for ``indices``."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> normalised last-stage map in ``output_fmt``."""
        x = self.stem(x)
        x = self.stages(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ------------------------------------------------------------------ weights
_PROJ_KEYS = ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds")


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: VSSM) -> Dict[str, torch.Tensor]:
    """Convert an official VMamba checkpoint to this model's keys (applied at load time).

    Handles: the ``{'model': ...}`` training checkpoint wrapper (and ``state_dict``),
    ``module.`` prefixes, the legacy v0 names (``patch_embed.proj/norm``,
    ``blocks.j.ln_1``/``self_attention``, top-level ``norm``/``head``), the
    ``layers.i.{blocks,downsample}`` layout (downsample moves to the start of
    stage i+1), ``classifier.{norm,head}``, the ``Sequential`` index names of
    stems and conv downsamples, the grouped-``Linear`` projections of the 2025
    one-file ``vmamba.py`` (``x_proj.weight``, ``dt_projs.weight``), and
    1x1-conv-shaped linear weights.  A state dict already in this model's
    format is returned unchanged.
    """
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    if any(k.startswith("stem.") for k in state_dict):
        return state_dict

    v2_stem = isinstance(model.stem, ConvStem)
    stem_map = {"0": "conv1", "2": "norm1", "5": "conv2", "7": "norm2"} if v2_stem else {"0": "proj", "2": "norm"}
    merging = len(model.stages) > 1 and isinstance(model.stages[1].downsample, PatchMerging2D)
    ds_map = {"1": "norm", "2": "reduction"} if merging else {"1": "conv", "3": "norm"}

    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = re.sub(r"^module\.", "", key)
        key = re.sub(r"^patch_embed\.(proj|norm)\.", r"stem.\1.", key)
        key = re.sub(r"^patch_embed\.(\d+)\.", lambda m: f"stem.{stem_map.get(m.group(1), m.group(1))}.", key)
        key = re.sub(r"^layers\.(\d+)\.downsample\.(\d+)\.",
                     lambda m: f"layers.{m.group(1)}.downsample.{ds_map.get(m.group(2), m.group(2))}.", key)
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample.", key)
        key = re.sub(r"^layers\.(\d+)\.blocks\.", r"stages.\1.blocks.", key)
        key = re.sub(r"\.ln_1\.", ".norm.", key)
        key = re.sub(r"\.self_attention\.", ".op.", key)
        key = re.sub(r"\.op\.x_proj\.weight$", ".op.x_proj_weight", key)
        key = re.sub(r"\.op\.dt_projs\.weight$", ".op.dt_projs_weight", key)
        key = re.sub(r"^classifier\.norm\.", "norm.", key)
        key = re.sub(r"^classifier\.head\.", "head.fc.", key)
        key = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)
        out[key] = value

    target = model.state_dict()
    for key, value in out.items():
        want = target.get(key)
        if want is None or value.shape == want.shape or value.numel() != want.numel():
            continue
        stacked = key.endswith(_PROJ_KEYS)
        conv_shaped_linear = value.dim() == 4 and value.shape[2:] == (1, 1) and want.dim() == 2
        if stacked or conv_shaped_linear:
            out[key] = value.reshape(want.shape)
    return out


def _create_vssm(variant: str, pretrained: bool = False, **kwargs) -> VSSM:
    # official files pickle a yacs config and carry 'model_ema' beside 'model' (timm's loader would pick
    # the EMA); the hub hands timm 'model'
    return create_zoo_model(VSSM, variant, pretrained, checkpoint_filter_fn, **kwargs)


_RELEASE = "https://github.com/MzeroMiko/VMamba/releases/download/%23"


def _cfg(url: str = "", first_conv: str = "stem.conv1", **kwargs) -> Dict[str, Any]:
    return {
        "url": url,
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": first_conv, "classifier": "head.fc",
        "license": "mit", "paper_ids": "arXiv:2401.10166", "paper_name": "VMamba: Visual State Space Model",
        "origin_url": "https://github.com/MzeroMiko/VMamba",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "vanilla_vmamba_tiny.in1k": _cfg(_RELEASE + "v0cls/vssmtiny_dp01_ckpt_epoch_292.pth", first_conv="stem.proj",
                                     notes=("82.2 top-1 (no EMA)",)),
    "vanilla_vmamba_small.in1k": _cfg(_RELEASE + "v0cls/vssmsmall_dp03_ckpt_epoch_238.pth", first_conv="stem.proj",
                                      notes=("83.5 top-1",)),
    "vanilla_vmamba_base.in1k": _cfg(_RELEASE + "v0cls/vssmbase_dp06_ckpt_epoch_241.pth", first_conv="stem.proj",
                                     notes=("83.7 top-1",)),
    "vmamba_tiny_s2l5.in1k": _cfg(_RELEASE + "v2cls/vssm_tiny_0230_ckpt_epoch_262.pth", notes=("82.5 top-1",)),
    "vmamba_small_s2l15.in1k": _cfg(_RELEASE + "v2cls/vssm_small_0229_ckpt_epoch_222.pth", notes=("83.6 top-1",)),
    "vmamba_base_s2l15.in1k": _cfg(_RELEASE + "v2cls/vssm_base_0229_ckpt_epoch_237.pth", notes=("83.9 top-1",)),
    "vmamba_tiny_s1l8.in1k": _cfg(_RELEASE + "v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth", notes=("82.6 top-1",)),
    "vmamba_small_s1l20.in1k": _cfg(_RELEASE + "v2cls/vssm1_small_0229s_ckpt_epoch_240.pth", notes=("83.3 top-1",)),
    "vmamba_base_s1l20.in1k": _cfg(_RELEASE + "v2cls/vssm1_base_0229s_ckpt_epoch_225.pth", notes=("83.8 top-1",)),
    "test_vmamba.untrained": _cfg(input_size=(3, 64, 64), pool_size=(2, 2), license="apache-2.0", paper_ids=None,
                                  paper_name=None),
})

# v0 ("vanilla"): gated SS2D, d_state 16, no MLP, 4x4 patch embed, PatchMerging, channels-last
_V0 = dict(ssm_d_state=16, ssm_ratio=2.0, ssm_conv_bias=True, ssm_gate=True, mlp_ratio=0.0,
           stem="v1", downsample="v1", channel_first=False)
# v2 ("v05_noz"): no gate, d_state 1, conv without bias, MLP 4, conv stem, Conv3x3/s2 downsample, channels-first
# v2 normalises over channels ("ln2d"); the trunk runs channels-last, which is the same arithmetic without the
# permutes of a channel-first LayerNorm and lets the fused scan kernel read pixel-major maps
# (channel_first=True gives the official (B, C, H, W) trunk, with identical weights and results)
_V2 = dict(ssm_d_state=1, ssm_conv_bias=False, ssm_gate=False, mlp_ratio=4.0,
           stem="v2", downsample="v3", channel_first=False)


@register_model
def vanilla_vmamba_tiny(pretrained: bool = False, **kwargs) -> VSSM:
    """Vanilla VMamba-T (v0): depths 2-2-9-2, dim 96; 23M params, 82.2 top-1."""
    model_args = dict(depths=(2, 2, 9, 2), dims=96, **_V0)
    return _create_vssm("vanilla_vmamba_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def vanilla_vmamba_small(pretrained: bool = False, **kwargs) -> VSSM:
    """Vanilla VMamba-S (v0): depths 2-2-27-2, dim 96; 44M params, 83.5 top-1."""
    model_args = dict(depths=(2, 2, 27, 2), dims=96, **_V0)
    return _create_vssm("vanilla_vmamba_small", pretrained, **dict(model_args, **kwargs))


@register_model
def vanilla_vmamba_base(pretrained: bool = False, **kwargs) -> VSSM:
    """Vanilla VMamba-B (v0): depths 2-2-27-2, dim 128; 76M params, 83.7 top-1."""
    model_args = dict(depths=(2, 2, 27, 2), dims=128, **_V0)
    return _create_vssm("vanilla_vmamba_base", pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_tiny_s2l5(pretrained: bool = False, **kwargs) -> VSSM:
    """VMamba-T[s2l5] (v2): depths 2-2-5-2, dim 96, ssm_ratio 2; 31M params, 82.5 top-1."""
    model_args = dict(depths=(2, 2, 5, 2), dims=96, ssm_ratio=2.0, **_V2)
    return _create_vssm("vmamba_tiny_s2l5", pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_small_s2l15(pretrained: bool = False, **kwargs) -> VSSM:
    """VMamba-S[s2l15] (v2): depths 2-2-15-2, dim 96, ssm_ratio 2; 50M params, 83.6 top-1."""
    model_args = dict(depths=(2, 2, 15, 2), dims=96, ssm_ratio=2.0, **_V2)
    return _create_vssm("vmamba_small_s2l15", pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_base_s2l15(pretrained: bool = False, **kwargs) -> VSSM:
    """VMamba-B[s2l15] (v2): depths 2-2-15-2, dim 128, ssm_ratio 2; 89M params, 83.9 top-1."""
    model_args = dict(depths=(2, 2, 15, 2), dims=128, ssm_ratio=2.0, **_V2)
    return _create_vssm("vmamba_base_s2l15", pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_tiny_s1l8(pretrained: bool = False, **kwargs) -> VSSM:
    """VMamba-T[s1l8] (v2): depths 2-2-8-2, dim 96, ssm_ratio 1; 30M params, 82.6 top-1."""
    model_args = dict(depths=(2, 2, 8, 2), dims=96, ssm_ratio=1.0, **_V2)
    return _create_vssm("vmamba_tiny_s1l8", pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_small_s1l20(pretrained: bool = False, **kwargs) -> VSSM:
    """VMamba-S[s1l20] (v2): depths 2-2-20-2, dim 96, ssm_ratio 1; 49M params, 83.3 top-1."""
    model_args = dict(depths=(2, 2, 20, 2), dims=96, ssm_ratio=1.0, **_V2)
    return _create_vssm("vmamba_small_s1l20", pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_base_s1l20(pretrained: bool = False, **kwargs) -> VSSM:
    """VMamba-B[s1l20] (v2): depths 2-2-20-2, dim 128, ssm_ratio 1; 87M params, 83.8 top-1."""
    model_args = dict(depths=(2, 2, 20, 2), dims=128, ssm_ratio=1.0, **_V2)
    return _create_vssm("vmamba_base_s1l20", pretrained, **dict(model_args, **kwargs))


@register_model
def test_vmamba(pretrained: bool = False, **kwargs) -> VSSM:
    """Tiny v2-style VMamba for fast tests: depths 1-1-2-1, dims 16-32-64-128."""
    model_args = dict(depths=(1, 1, 2, 1), dims=16, ssm_ratio=1.0, **_V2)
    return _create_vssm("test_vmamba", pretrained, **dict(model_args, **kwargs))
