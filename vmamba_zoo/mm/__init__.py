"""OpenMMLab (mmengine / mmdet 3 / mmseg 1) components of the zoo.

``import vmamba_zoo.mm`` (or ``custom_imports=dict(imports=['vmamba_zoo.mm'])``
in a config) registers, in mmengine's root registries (where mmdet's and
mmseg's child registries find them): :class:`VMambaZooBackbone` (detection /
segmentation backbone), :class:`ZooClassifier`, :class:`ZooImageFolderDataset`
and :class:`ZooAccuracy` (classification), the hooks :class:`RNGStateHook` and
:class:`TrainRecordHook`, and the CPU DDP wrapper; it also
registers the zoo's timm models.
"""
import vmamba_zoo  # noqa: F401  (registers the zoo's timm models)

from .backbone import VMambaZooBackbone, find_checkpoint_filter_fn
from .checkpoint import (UnpickledObject, load_checkpoint_file, mmengine_safe_globals, register_checkpoint_loader,
                         register_mmengine_safe_globals, unwrap_state_dict)
from .classification import ZooAccuracy, ZooClassifier, ZooImageFolderDataset
from .dist import CPUDistributedDataParallel
from .hooks import RNGStateHook, TrainRecordHook

__all__ = [
    "VMambaZooBackbone",
    "ZooClassifier",
    "ZooImageFolderDataset",
    "ZooAccuracy",
    "CPUDistributedDataParallel",
    "RNGStateHook",
    "TrainRecordHook",
    "register_checkpoint_loader",
    "find_checkpoint_filter_fn",
    "UnpickledObject",
    "load_checkpoint_file",
    "mmengine_safe_globals",
    "register_mmengine_safe_globals",
    "unwrap_state_dict",
]
