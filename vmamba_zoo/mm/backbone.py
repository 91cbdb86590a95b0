"""OpenMMLab backbone that wraps any timm model of the zoo (or of timm).

One class, registered in mmengine's *root* ``MODELS`` registry, so that
``type='VMambaZooBackbone'`` resolves from mmdet and mmseg configs alike
(an unscoped type is looked up in the current registry, then its parents).

The wrapped model is built with ``timm.create_model`` and run through its
``forward_intermediates`` (the timm API every zoo model implements); layers
after the last requested stage and the classifier are pruned.  Like the
official ``Backbone_VSSM``/``Backbone_SpatialMamba``/``Backbone_EfficientVSSM``
classes, every output stage ``i`` gets a LayerNorm over channels named
``outnorm{i}``, and outputs are NCHW maps.

State-dict layout: ``model.<timm key>`` for the wrapped model and
``outnorm{i}.{weight,bias}``.  Official checkpoints load in three ways:

* ``init_cfg=dict(type='Pretrained', checkpoint=...)`` with an official
  *classification* checkpoint (``{'model': ...}`` or ``{'state_dict': ...}``):
  keys are converted by the model family's ``checkpoint_filter_fn``,
  incompatible keys are logged and an error is raised when nothing matches
  (mmengine's own ``PretrainedInit`` silently loads nothing from a
  ``{'model': ...}`` file);
* the same with a detection/segmentation checkpoint: its ``backbone.*`` part
  is used;
* an official *downstream* checkpoint (``backbone.layers...``,
  ``backbone.outnorm0...``, plus neck/heads) given to ``tools/test.py`` or
  ``load_from``: a load-state-dict pre-hook converts the backbone's keys on the
  fly, so the whole detector/segmentor loads in one go.
"""
from __future__ import annotations

import re
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import timm
import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import initialize
from mmengine.registry import MODELS
from timm.layers import LayerNorm2d
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .checkpoint import load_checkpoint_file, unwrap_state_dict

__all__ = ["VMambaZooBackbone", "find_checkpoint_filter_fn"]

_OUTNORM_RE = re.compile(r"^outnorm(\d+)\.")
# LayerNorm eps of the official Backbone_* out-norms (torch's default).
_OUTNORM_EPS = 1e-5


def find_checkpoint_filter_fn(model: nn.Module) -> Optional[Callable[[Dict[str, torch.Tensor], nn.Module], Dict]]:
    """Return the ``checkpoint_filter_fn`` of the module that defines ``model``'s class.

    timm convention: each family file has a ``checkpoint_filter_fn(state_dict,
    model)`` that remaps the original repository's keys; it is the zoo's key
    converter for official checkpoints.  ``None`` if the family has none.
    """
    module = sys.modules.get(type(model).__module__)
    fn = getattr(module, "checkpoint_filter_fn", None)
    return fn if callable(fn) else None


@MODELS.register_module()
class VMambaZooBackbone(BaseModule):
    """Multi-scale backbone from a timm model, for mmdet 3 / mmseg 1.

    Args:
        model_name: timm model name, e.g. ``'vmamba_tiny_s1l8'``,
            ``'spatial_mamba_tiny'``, ``'efficient_vmamba_tiny'`` (any timm
            model with ``forward_intermediates`` works).
        out_indices: feature levels to return, indices into the model's
            ``feature_info`` (0 = stride 4 for the zoo's models).
        out_norm: add a LayerNorm over channels (``outnorm{i}``) to each output,
            as the official backbones do.
        frozen_stages: -1 freezes nothing; 0 freezes the stem (every parameter
            registered before the first feature level's); k > 0 freezes the stem and
            levels ``0..k-1`` (the modules named in ``feature_info``) and
            their out-norms.  Frozen parts stay in eval mode.
        norm_eval: keep BatchNorm layers in eval mode while training
            (no effect on LayerNorm).
        with_cp: gradient checkpointing (``model.set_grad_checkpointing``).
        timm_pretrained: load the weights of timm's ``pretrained_cfg``
            (hub/URL/file given through ``pretrained_cfg_overlay``).
        init_cfg: mmengine init config.  ``dict(type='Pretrained',
            checkpoint=PATH_OR_URL, prefix=None, state_dict_key=None)`` loads
            an official classification or downstream checkpoint (see module
            docstring); other init types are applied as usual.
        **model_kwargs: passed to ``timm.create_model`` (``drop_path_rate``,
            ``img_size``, ...); unknown names raise there.

    Shape:
        input ``(B, 3, H, W)``; output a tuple with one ``(B, C_i, H / s_i, W / s_i)``
        map per out index, ``C_i = out_channels[k]``, ``s_i = strides[k]``.
    """

    def __init__(
        self,
        model_name: str,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        out_norm: bool = True,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        with_cp: bool = False,
        timm_pretrained: bool = False,
        init_cfg: Union[dict, List[dict], None] = None,
        **model_kwargs: Any,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if not timm.is_model(model_name):
            raise ValueError(
                f"unknown timm model {model_name!r}: import the package that registers it "
                "(configs need custom_imports=dict(imports=['vmamba_zoo.mm'])) or check the "
                "name with timm.list_models('*mamba*')")
        model = timm.create_model(model_name, pretrained=timm_pretrained, **model_kwargs)
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "feature_info"):
            raise TypeError(
                f"{model_name!r} ({type(model).__name__}) has no forward_intermediates/feature_info; "
                "VMambaZooBackbone needs timm's forward_intermediates API")
        num_levels = len(model.feature_info)
        indices = []
        for i in out_indices:
            if not isinstance(i, int) or not -num_levels <= i < num_levels:
                raise ValueError(f"out_indices {tuple(out_indices)} out of range for {model_name!r}, "
                                 f"which has {num_levels} feature levels")
            indices.append(i % num_levels)
        if not indices or sorted(set(indices)) != indices:
            raise ValueError(f"out_indices must be non-empty, unique and increasing, got {tuple(out_indices)}")
        if not -1 <= frozen_stages <= indices[-1] + 1:
            raise ValueError(f"frozen_stages must be in [-1, {indices[-1] + 1}] (stages after the last "
                             f"out index are pruned), got {frozen_stages}")

        self.model_name = model_name
        self.out_indices: Tuple[int, ...] = tuple(indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        info = list(model.feature_info)
        self._stage_names: List[str] = [f["module"] for f in info]
        self.out_channels: List[int] = [info[i]["num_chs"] for i in self.out_indices]
        self.strides: List[int] = [info[i]["reduction"] for i in self.out_indices]
        # Must run before pruning: the pruned modules are still looked up here.
        self._stem_param_names = self._find_stem_params(model)
        model.prune_intermediate_layers(list(self.out_indices), prune_norm=True, prune_head=True)
        self.model = model
        if with_cp:
            if not hasattr(model, "set_grad_checkpointing"):
                raise TypeError(f"{model_name!r} does not support gradient checkpointing (with_cp=True)")
            model.set_grad_checkpointing(True)
        self.out_norm = out_norm
        for i, ch in zip(self.out_indices, self.out_channels):
            self.add_module(f"outnorm{i}", LayerNorm2d(ch, eps=_OUTNORM_EPS) if out_norm else nn.Identity())
        self.register_load_state_dict_pre_hook(_convert_official_downstream_keys)
        self._freeze_stages()

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(B, 3, H, W)`` -> tuple of ``(B, C_i, H/s_i, W/s_i)`` NCHW maps."""
        feats = self.model.forward_intermediates(
            x, indices=list(self.out_indices), norm=False, output_fmt="NCHW", intermediates_only=True)
        return tuple(getattr(self, f"outnorm{i}")(f) for i, f in zip(self.out_indices, feats))

    # ------------------------------------------------------------ freezing
    def _find_stem_params(self, model: nn.Module) -> List[str]:
        # Parameters registered before the first one that belongs to a feature level.
        first_ids = {id(p) for n in self._stage_names for p in model.get_submodule(n).parameters()}
        stem = []
        for name, p in model.named_parameters():
            if id(p) in first_ids:
                break
            stem.append(name)
        return stem

    def _frozen_modules(self) -> List[nn.Module]:
        mods: List[nn.Module] = []
        for i in range(self.frozen_stages):
            mods.append(self.model.get_submodule(self._stage_names[i]))
            if i in self.out_indices:
                mods.append(getattr(self, f"outnorm{i}"))
        return mods

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        params = dict(self.model.named_parameters())
        for name in self._stem_param_names:
            params[name].requires_grad_(False)
        for mod in self._frozen_modules():
            mod.eval()
            for p in mod.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "VMambaZooBackbone":
        """Set train mode, keeping frozen stages and (with ``norm_eval``) BatchNorms in eval."""
        super().train(mode)
        if mode:
            for mod in self._frozen_modules():
                mod.eval()
            if self.frozen_stages >= 0:  # stem modules that hold only stem parameters
                stem = set(self._stem_param_names)
                for name, mod in self.model.named_modules():
                    own = [f"{name}.{n}" if name else n for n, _ in mod.named_parameters()]
                    if own and all(n in stem for n in own):
                        mod.eval()
            if self.norm_eval:
                for mod in self.modules():
                    if isinstance(mod, _BatchNorm):
                        mod.eval()
        return self

    # ------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """Apply ``init_cfg``; a ``Pretrained`` entry is loaded by :meth:`load_pretrained`.

        The wrapped timm model is initialised by its own constructor and is
        deliberately *not* re-initialised here (mmengine would otherwise call
        a timm ``init_weights`` method on it and overwrite loaded weights).
        """
        if self.is_init:
            print_log(f"init_weights of {type(self).__name__} has been called more than once",
                      logger="current", level=30)
            return
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg] if self.init_cfg else []
        pretrained = [c for c in cfgs if c.get("type") == "Pretrained"]
        others = [c for c in cfgs if c.get("type") != "Pretrained"]
        if others:
            initialize(self, others)
        if len(pretrained) > 1:
            raise ValueError(f"init_cfg has {len(pretrained)} Pretrained entries; give one")
        if pretrained:
            cfg = dict(pretrained[0])
            cfg.pop("type")
            checkpoint = cfg.pop("checkpoint", None)
            if not checkpoint:
                raise ValueError("init_cfg=dict(type='Pretrained') needs checkpoint=<path or URL>")
            self.load_pretrained(checkpoint, **cfg)
        self._is_init = True

    def convert_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Map a backbone state dict in a foreign layout to this module's layout.

        Accepts this module's own layout (``model.*``/``outnorm*``), timm
        layout of the wrapped model, or the official repository's layout
        (classification ``VSSM``-style keys or ``Backbone_*`` keys with
        ``outnorm{i}``).  Official keys go through the family's
        ``checkpoint_filter_fn``.
        """
        if any(k.startswith("model.") for k in state_dict):
            return dict(state_dict)
        out, rest = {}, {}
        for k, v in state_dict.items():
            (out if _OUTNORM_RE.match(k) else rest)[k] = v
        filter_fn = find_checkpoint_filter_fn(self.model)
        if filter_fn is not None and rest:
            rest = filter_fn(rest, self.model)
        out.update({f"model.{k}": v for k, v in rest.items()})
        return out

    def load_pretrained(
        self,
        checkpoint: str,
        prefix: Optional[str] = None,
        state_dict_key: Optional[str] = None,
        map_location: str = "cpu",
    ) -> Tuple[List[str], List[str]]:
        """Load an official classification or downstream checkpoint into the backbone.

        Args:
            checkpoint: path or URL.
            prefix: take only keys under this prefix (e.g. ``'backbone.'``);
                by default ``'backbone.'`` is used when the file has such keys.
            state_dict_key: checkpoint entry holding the weights (default:
                ``'state_dict'``, then ``'model'``).
            map_location: ``torch.load`` map location.

        Returns:
            ``(missing_keys, unexpected_keys)`` after conversion; both are logged.

        Raises:
            RuntimeError: no key of the checkpoint matches the backbone, or a
                matching key has a different shape (wrong variant/config).
        """
        sd = unwrap_state_dict(load_checkpoint_file(checkpoint, map_location), state_dict_key)
        if prefix is None and any(k.startswith("backbone.") for k in sd):
            prefix = "backbone."
        if prefix:
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if not sd:
                raise RuntimeError(f"{checkpoint}: no keys start with prefix {prefix!r}")
        sd = self.convert_state_dict(sd)
        own = self.state_dict()
        matched = {k: v for k, v in sd.items() if k in own}
        unexpected = sorted(k for k in sd if k not in own)
        missing = sorted(k for k in own if k not in sd)
        bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
               for k, v in matched.items() if v.shape != own[k].shape]
        if not matched:
            raise RuntimeError(
                f"{checkpoint}: none of its {len(sd)} keys match {self.model_name!r} "
                f"(e.g. checkpoint {list(sd)[:3]} vs model {list(own)[:3]}); wrong file or model_name?")
        if bad:
            raise RuntimeError(f"{checkpoint}: shape mismatch for {len(bad)} keys, is it a checkpoint of "
                               f"{self.model_name!r}? " + "; ".join(bad[:10]))
        self.load_state_dict(matched, strict=False)
        print_log(f"{type(self).__name__}({self.model_name}): loaded {len(matched)}/{len(own)} tensors "
                  f"from {checkpoint}; missing: {missing or 'none'}; unexpected (ignored): "
                  f"{unexpected or 'none'}", logger="current", level=20)
        return missing, unexpected


def _convert_official_downstream_keys(module: VMambaZooBackbone, state_dict: Dict[str, Any], prefix: str,
                                      *args: Any) -> None:
    """Load-state-dict pre-hook: convert official ``Backbone_*`` keys in place.

    Official detection/segmentation checkpoints store the backbone as
    ``backbone.<official VSSM key>`` and ``backbone.outnorm{i}.*``.  When the
    keys under ``prefix`` are not in this module's layout (no ``model.*``
    key), they are converted with :meth:`VMambaZooBackbone.convert_state_dict`.
    """
    own = [k for k in state_dict if k.startswith(prefix)]
    if not own or any(k.startswith(prefix + "model.") for k in own):
        return
    if all(_OUTNORM_RE.match(k[len(prefix):]) for k in own):
        return
    foreign = {k[len(prefix):]: state_dict.pop(k) for k in own}
    state_dict.update({prefix + k: v for k, v in module.convert_state_dict(foreign).items()})
