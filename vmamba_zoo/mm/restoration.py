"""Registers the zoo's restoration components with mmengine (root registries).

``custom_imports = dict(imports=['vmamba_zoo.mm.restoration'], allow_failed_imports=False)``
in a config makes these names available to ``mmengine.runner.Runner``:

* ``DATASETS``: ``PairedDegradationDataset``;
* ``MODELS``: ``RestorationModel``, ``RestorationDataPreprocessor`` and the networks
  ``MambaIR``, ``SerpentUNet``, ``WaveletMambaIR``;
* ``METRICS``: ``RestorationPSNR``, ``RestorationSSIM``.

The root registries are searched by mmdet/mmseg/mmagic scopes too, so the names also
resolve there.
"""
from __future__ import annotations

from mmengine.registry import DATASETS, METRICS, MODELS

from ..models.mambair import MambaIR
from ..models.restoration_nets import SerpentUNet, WaveletMambaIR
from ..restoration.data import PairedDegradationDataset
from .restoration_metrics import RestorationPSNR, RestorationSSIM
from .restoration_model import RestorationDataPreprocessor, RestorationModel

__all__ = [
    "PairedDegradationDataset",
    "RestorationModel",
    "RestorationDataPreprocessor",
    "RestorationPSNR",
    "RestorationSSIM",
    "MambaIR",
    "SerpentUNet",
    "WaveletMambaIR",
]


def _register() -> None:
    DATASETS.register_module(module=PairedDegradationDataset, force=True)
    for cls in (RestorationModel, RestorationDataPreprocessor, MambaIR, SerpentUNet, WaveletMambaIR):
        MODELS.register_module(module=cls, force=True)
    for cls in (RestorationPSNR, RestorationSSIM):
        METRICS.register_module(module=cls, force=True)


_register()
