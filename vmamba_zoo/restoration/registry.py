"""A small registry of restoration networks (kept apart from timm's classifier registry).

Restoration networks map images to images; timm's ``create_model`` machinery (heads,
``num_classes``, feature extraction) does not apply to them, so they are listed here:

>>> from vmamba_zoo.restoration import create_restoration_model, list_restoration_models
>>> net = create_restoration_model("mambair_light_sr_x4", checkpoint_path="MambaIR_light4.pth")
"""
from __future__ import annotations

import fnmatch
import logging
import os
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
from torch import nn

__all__ = ["register_restoration_model", "create_restoration_model", "list_restoration_models",
           "load_restoration_checkpoint", "adapt_checkpoint"]

_logger = logging.getLogger(__name__)
_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}


def register_restoration_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a builder ``fn(**kwargs) -> nn.Module`` under its name."""
    name = fn.__name__
    if name in _REGISTRY and _REGISTRY[name] is not fn:
        raise ValueError(f"restoration model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def list_restoration_models(pattern: str = "*") -> List[str]:
    """Registered names matching a shell-style ``pattern``."""
    _ensure_builtin_models()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def _ensure_builtin_models() -> None:
    # the zoo's network files register themselves on import
    from ..models import mambair, restoration_nets  # noqa: F401


_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")


def adapt_checkpoint(state: Mapping[str, Any], model: nn.Module, param_key: Optional[str] = None) -> Dict[str, Any]:
    """A loaded checkpoint -> ``model``'s state dict, through the family's ``checkpoint_filter_fn``.

    Networks without a filter function get the generic treatment: unwrap BasicSR's
    ``params_ema`` / ``params`` (or ``param_key``), mmengine's ``state_dict`` or timm's
    ``model``, and strip ``module.`` / ``network.`` prefixes.
    """
    import re
    import sys

    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        return dict(filter_fn(state, model, param_key=param_key))
    sd: Mapping[str, Any] = state
    if param_key is not None:
        if param_key not in sd:
            raise KeyError(f"param_key {param_key!r} not in checkpoint (keys: {sorted(sd)[:8]})")
        sd = sd[param_key]
    else:
        for key in _WRAPPER_KEYS:
            if key in sd and isinstance(sd[key], Mapping):
                sd = sd[key]
                break
    return {re.sub(r"^(module\.|network\.)+", "", k): v for k, v in sd.items()}


def load_restoration_checkpoint(model: nn.Module, checkpoint_path: str, strict: bool = True,
                                param_key: Optional[str] = None) -> nn.Module:
    """Load a checkpoint file into ``model``, through the model family's ``checkpoint_filter_fn``.

    Accepts ``.safetensors`` files and torch files holding a plain state dict or a
    BasicSR / mmengine / timm wrapper (``params_ema`` / ``params`` / ``state_dict`` / ``model``).
    """
    if not os.path.isfile(checkpoint_path):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint_path!r}")
    if checkpoint_path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state: Mapping[str, Any] = load_file(checkpoint_path)
    else:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    state = adapt_checkpoint(state, model, param_key)
    missing, unexpected = model.load_state_dict(state, strict=strict)
    if missing or unexpected:
        _logger.warning("loaded %s with missing keys %s and unexpected keys %s", checkpoint_path, missing, unexpected)
    return model


def create_restoration_model(name: str, checkpoint_path: Optional[str] = None, strict: bool = True,
                             **kwargs: Any) -> nn.Module:
    """Build a registered restoration network, optionally loading a checkpoint file.

    Args:
        name: one of :func:`list_restoration_models`.
        checkpoint_path: official (BasicSR ``params``/``params_ema``) or zoo checkpoint.
        strict: strict state-dict loading.
        **kwargs: override constructor arguments.
    """
    _ensure_builtin_models()
    if name not in _REGISTRY:
        raise ValueError(f"unknown restoration model {name!r}; available: {list_restoration_models()}")
    model = _REGISTRY[name](**kwargs)
    if checkpoint_path is not None:
        load_restoration_checkpoint(model, checkpoint_path, strict=strict)
    return model
