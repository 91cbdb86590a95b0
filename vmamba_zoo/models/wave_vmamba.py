"""Wave-VMamba: VMamba v2 with a wavelet-domain scan route (the zoo's own variant, no official weights).

The macro architecture is VMamba v2's (:class:`vmamba_zoo.models.vmamba.VSSM`
with vmamba.py's v2 settings: two-conv stem, Conv3x3/s2 downsampling, SS2D
without gate, d_state 1, MLP ratio 4).  Only the scan pattern changes: ``"wavelet"``
(:class:`vmamba_zoo.scan.WaveletScan`) keeps VMamba's row-major route and its
reverse, and replaces the column-major route and its reverse by a route over a
two-level Haar wavelet-packet transform of the map, read in subband windows (one
window = all 16 subband coefficients of one low-resolution location), after
DiMSUM (arXiv:2411.04168).  The wavelet transform has no parameters, so every
variant has exactly the parameters (and parameter names) of its cross-scan twin:

* ``wave_vmamba_tiny``  <-> ``vmamba_tiny_s1l8``  (depths 2-2-8-2, dim 96, ssm_ratio 1);
* ``wave_vmamba_small`` <-> ``vmamba_small_s1l20`` (depths 2-2-20-2, dim 96, ssm_ratio 1).

No ImageNet weights exist for these models.  Because the layouts match, a
VMamba checkpoint of the twin loads into them (e.g. as an initialisation for
fine-tuning), but the routes 1/3 then read different sequences than they were
trained on.
"""
from __future__ import annotations

from typing import Any, Dict

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model

from ._zoo import ModelFamily, create_zoo_model, register_family
from .vmamba import _V2, VSSM, checkpoint_filter_fn

__all__ = ["WAVE_V2"]

FAMILY = register_family(ModelFamily(
    name="wave_vmamba",
    module="wave_vmamba",
    scan_patterns=("wavelet",),
    paper="arXiv:2401.10166",
    origin_url="https://github.com/MzeroMiko/VMamba",
    license="apache-2.0",
    description="VMamba v2 with a Haar wavelet-packet subband-window scan route (zoo variant, no official weights)",
    # no published models: the counts are those of the cross-scan twins (identical parameter layout)
    params_m={"wave_vmamba_tiny": 30, "wave_vmamba_small": 49},
    shrink_kwargs=dict(depths=(1, 1, 1, 1)),
))

#: VMamba v2 ("v05_noz") settings (taken from vmamba.py, so the twins stay in sync) with the wavelet scan.
WAVE_V2 = dict(_V2, scan="wavelet")


def _create_wave_vmamba(variant: str, pretrained: bool = False, **kwargs) -> VSSM:
    if pretrained:
        raise ValueError(
            f"{variant}: there are no pretrained weights for the wave_vmamba models (neither official nor zoo). "
            f"Create it with pretrained=False, or initialise it from its cross-scan twin's checkpoint "
            f"(identical parameter names), e.g. model.load_state_dict(timm.create_model('vmamba_tiny_s1l8', "
            f"pretrained=True).state_dict()).")
    return create_zoo_model(VSSM, variant, pretrained, checkpoint_filter_fn, **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1", "classifier": "head.fc",
        "license": "apache-2.0", "paper_ids": "arXiv:2401.10166,arXiv:2411.04168",
        "origin_url": "https://github.com/MzeroMiko/VMamba",
        "notes": ("untrained: no official or zoo ImageNet weights",),
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "wave_vmamba_tiny.untrained": _cfg(),
    "wave_vmamba_small.untrained": _cfg(),
    "test_wave_vmamba.untrained": _cfg(input_size=(3, 64, 64), pool_size=(2, 2), paper_ids=None),
})


@register_model
def wave_vmamba_tiny(pretrained: bool = False, **kwargs) -> VSSM:
    """Wave-VMamba-T (no pretrained weights): VMamba-T[s1l8] with the wavelet scan; 30M params."""
    model_args = dict(depths=(2, 2, 8, 2), dims=96, ssm_ratio=1.0, **WAVE_V2)
    return _create_wave_vmamba("wave_vmamba_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def wave_vmamba_small(pretrained: bool = False, **kwargs) -> VSSM:
    """Wave-VMamba-S (no pretrained weights): VMamba-S[s1l20] with the wavelet scan; 49M params."""
    model_args = dict(depths=(2, 2, 20, 2), dims=96, ssm_ratio=1.0, **WAVE_V2)
    return _create_wave_vmamba("wave_vmamba_small", pretrained, **dict(model_args, **kwargs))


@register_model
def test_wave_vmamba(pretrained: bool = False, **kwargs) -> VSSM:
    """Tiny Wave-VMamba for fast tests: depths 1-1-2-1, dims 16-32-64-128 (twin of ``test_vmamba``)."""
    model_args = dict(depths=(1, 1, 2, 1), dims=16, ssm_ratio=1.0, **WAVE_V2)
    return _create_wave_vmamba("test_wave_vmamba", pretrained, **dict(model_args, **kwargs))
