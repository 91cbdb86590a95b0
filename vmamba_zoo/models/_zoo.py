"""Metadata of the zoo's model families (for listing, CLIs and generic tests)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import timm

__all__ = ["ModelFamily", "MODEL_FAMILIES", "register_family", "list_zoo_models"]


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
