"""Metadata of the zoo's model families (for listing, CLIs and generic tests) and their shared builders."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import timm
from timm.models import build_model_with_cfg
from torch import nn

from ..hub import prepare_pretrained_cfg, release_pretrained_state_dict

__all__ = ["ModelFamily", "MODEL_FAMILIES", "register_family", "list_zoo_models", "create_zoo_model", "stage_dims"]


@dataclass(frozen=True)
class ModelFamily:
    """One model family of the zoo.

    Attributes:
        name: family name, e.g. ``"vmamba"``.
        module: the timm registry module of its models (the last component of
            the defining module, what ``timm.list_models(module=...)`` takes).
        scan_patterns: scan patterns (``vmamba_zoo.scan``) its models use.
        paper: paper id, e.g. ``"arXiv:2401.10166"``.
        origin_url: the official code.
        license: licence of the official weights.
        description: one line for listings.
        params_m: published parameter counts in millions, by model name
            (checked by the tests to +-0.5M).
        shrink_kwargs: ``create_model`` keyword arguments that make any of the
            family's models cheap for CPU tests while keeping each variant's
            layer configuration (e.g. fewer blocks per stage).
    """

    name: str
    module: str
    scan_patterns: Tuple[str, ...]
    paper: str
    origin_url: str
    license: str
    description: str = ""
    params_m: Mapping[str, float] = field(default_factory=dict)
    shrink_kwargs: Mapping[str, Any] = field(default_factory=dict)


MODEL_FAMILIES: Dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add a family to :data:`MODEL_FAMILIES` (each name once)."""
    if family.name in MODEL_FAMILIES and MODEL_FAMILIES[family.name] != family:
        raise ValueError(f"model family {family.name!r} is already registered")
    MODEL_FAMILIES[family.name] = family
    return family


def list_zoo_models(family: Optional[str] = None, pretrained: bool = False) -> List[str]:
    """timm model names registered by the zoo (optionally one family; with ``pretrained``, ``arch.tag`` names)."""
    if family is not None and family not in MODEL_FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(MODEL_FAMILIES)}")
    families = [MODEL_FAMILIES[family]] if family is not None else list(MODEL_FAMILIES.values())
    names: List[str] = []
    for fam in families:
        names.extend(timm.list_models(module=fam.module, pretrained=pretrained))
    return sorted(set(names))


def stage_dims(dims: Union[int, Sequence[int]], num_stages: int) -> List[int]:
    """Per-stage widths: an int C means (C, 2C, 4C, ...); a sequence must have one entry per stage."""
    if isinstance(dims, int):
        return [dims * 2 ** i for i in range(num_stages)]
    dims = list(dims)
    if len(dims) != num_stages:
        raise ValueError(f"dims ({len(dims)} entries) and depths ({num_stages} entries) must have the same length")
    return dims


def create_zoo_model(model_cls: Callable[..., nn.Module], variant: str, pretrained: bool,
                     filter_fn: Callable, **kwargs) -> nn.Module:
    """``build_model_with_cfg`` for a zoo family (feature getter, ``out_indices`` default (0, 1, 2, 3)).

    With ``pretrained``, the zoo's hub fetches, verifies and safely reads the official file (training
    checkpoints that pickle configs, which timm's weights-only loaders refuse) and hands timm its state
    dict, so ``filter_fn``, in_chans/num_classes adaptation and the strict load still apply; the dict
    is dropped from the model's pretrained_cfg afterwards.
    """
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    if pretrained:
        kwargs["pretrained_cfg"] = prepare_pretrained_cfg(
            variant, kwargs.pop("pretrained_cfg", None), kwargs.pop("pretrained_cfg_overlay", None))
    model = build_model_with_cfg(
        model_cls, variant, pretrained,
        pretrained_filter_fn=filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )
    release_pretrained_state_dict(model)
    return model
