"""Mixed precision for mmengine configs: one switch for ``tools/train.py --amp`` and the scaling study."""
from __future__ import annotations

from typing import Optional

from mmengine.config import Config

__all__ = ["AMP_DTYPES", "use_amp"]

#: autocast dtypes ``use_amp`` accepts; bfloat16 is the dtype the zoo's fused VSS blocks take on GPU
#: (under float16 they run module by module)
AMP_DTYPES = ("float16", "bfloat16")


def use_amp(cfg: Config, dtype: Optional[str] = None) -> None:
    """Train ``cfg`` under mmengine's ``AmpOptimWrapper``: an ``OptimWrapper`` becomes one with a dynamic loss
    scale (an ``AmpOptimWrapper`` is kept as configured); ``dtype``: ``'float16'``, ``'bfloat16'`` or None
    (the config's, else mmengine's default, float16).

    Raises:
        ValueError: another wrapper type, or an unknown ``dtype``.
    """
    if dtype is not None and dtype not in AMP_DTYPES:
        raise ValueError(f"AMP dtype must be one of {AMP_DTYPES}, got {dtype!r}")
    wrapper = cfg.optim_wrapper.get("type", "OptimWrapper")
    if wrapper not in ("OptimWrapper", "AmpOptimWrapper"):
        raise ValueError(f"AMP needs optim_wrapper.type 'OptimWrapper' or 'AmpOptimWrapper', the config has "
                         f"{wrapper!r}")
    if wrapper == "OptimWrapper":
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    if dtype is not None:
        cfg.optim_wrapper.dtype = dtype
