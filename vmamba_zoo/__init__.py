"""vmamba-zoo: visual Mamba (selective state space) backbones.

``import vmamba_zoo`` registers the zoo's models with timm, so that
``timm.create_model("vmamba_tiny_s1l8")`` works.  OpenMMLab components are
registered by ``import vmamba_zoo.mm`` (configs do it through
``custom_imports``), so mmengine is not imported here.
"""
from . import models  # noqa: F401  (registers the models with timm)

__version__ = "0.1.0"
