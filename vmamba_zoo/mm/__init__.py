"""OpenMMLab (mmengine / mmdet 3 / mmseg 1) components of the zoo.

``import vmamba_zoo.mm`` (or ``custom_imports=dict(imports=['vmamba_zoo.mm'])``
in a config) registers :class:`VMambaZooBackbone` in mmengine's root
``MODELS`` registry, where mmdet's and mmseg's registries find it, and
registers the zoo's timm models.
"""
import vmamba_zoo  # noqa: F401  (registers the zoo's timm models)

from .backbone import VMambaZooBackbone, find_checkpoint_filter_fn
from .checkpoint import (UnpickledObject, load_checkpoint_file, mmengine_safe_globals,
                         register_mmengine_safe_globals, unwrap_state_dict)

__all__ = [
    "VMambaZooBackbone",
    "find_checkpoint_filter_fn",
    "UnpickledObject",
    "load_checkpoint_file",
    "mmengine_safe_globals",
    "register_mmengine_safe_globals",
    "unwrap_state_dict",
]
