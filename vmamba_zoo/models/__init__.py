"""timm models of the zoo.

Importing this package registers every family's models with timm
(``timm.create_model("vmamba_tiny_s1l8")``).  :data:`MODEL_FAMILIES` holds
per-family metadata (timm module, scan patterns, paper, licence) and
:func:`list_zoo_models` lists the registered model names.
"""
from ._zoo import MODEL_FAMILIES, ModelFamily, list_zoo_models, register_family
from . import vmamba  # noqa: F401  (registers the VMamba models)
from . import efficient_vmamba  # noqa: F401  (EfficientVMamba)
from . import spatial_mamba  # noqa: F401  (Spatial-Mamba)
from . import wave_vmamba  # noqa: F401  (VMamba v2 with the wavelet scan)

__all__ = ["MODEL_FAMILIES", "ModelFamily", "list_zoo_models", "register_family"]
