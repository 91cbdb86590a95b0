"""Convert an official checkpoint into the zoo's safetensors format.

The official file is loaded safely (:func:`vmamba_zoo.hub.load_checkpoint_file`), its
keys are remapped by the model family's ``checkpoint_filter_fn`` (the same function
timm applies at load time), the result is checked by a strict ``load_state_dict``
into a freshly built model, and written as ``.safetensors`` with provenance metadata.
The output loads with::

    timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file="out.safetensors"))
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

__all__ = ["family_filter_fn", "convert_checkpoint"]


def family_filter_fn(model_name: str) -> Optional[Callable]:
    """The ``checkpoint_filter_fn`` of the module that registered ``model_name`` (None if it has none)."""
    from timm.models import model_entrypoint, split_model_name_tag

    module = sys.modules[model_entrypoint(split_model_name_tag(model_name)[0]).__module__]
    return getattr(module, "checkpoint_filter_fn", None)


def convert_checkpoint(
    src: Union[str, Path],
    dst: Union[str, Path],
    model_name: str,
    *,
    key: Optional[str] = None,
) -> Dict[str, Any]:
    """Convert ``src`` (official .pth or any supported checkpoint) to ``dst`` (.safetensors).

    Args:
        src: input checkpoint.
        dst: output file; ``.safetensors`` is appended if missing.
        model_name: the zoo model the weights belong to (its architecture must match).
        key: key of the state dict inside ``src`` (default: model/state_dict/params_ema/params).

    Returns:
        ``{"path", "tensors", "params", "sha256"}``.

    Raises:
        ValueError: the converted weights do not match the model (missing/unexpected keys, shapes).
    """
    import timm
    from safetensors.torch import save_file

    from .hub import load_checkpoint_file, sha256_file

    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        dst = dst.with_name(dst.name + ".safetensors")
    state = load_checkpoint_file(src, key=key)
    model = timm.create_model(model_name, pretrained=False)
    filter_fn = family_filter_fn(model_name)
    if filter_fn is not None:
        state = filter_fn(state, model)
    target = model.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = sorted(k for k in set(state) & set(target) if tuple(state[k].shape) != tuple(target[k].shape))
    if missing or unexpected or wrong:
        def _few(keys):
            return f"{keys[:5]}{' ...' if len(keys) > 5 else ''} ({len(keys)})"

        problems = [f"missing {_few(missing)}" if missing else "", f"unexpected {_few(unexpected)}" if unexpected else "",
                    f"wrong shapes {_few(wrong)}" if wrong else ""]
        raise ValueError(f"{src.name} does not fit {model_name}: " + "; ".join(p for p in problems if p))
    # safetensors needs contiguous tensors that do not share storage
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata={"format": "pt", "model": model_name, "source_file": src.name,
                                           "source_sha256": sha256_file(src), "converter": "vmamba_zoo.convert"})
    model.load_state_dict(tensors, strict=True)  # final check: the file's content loads
    return {"path": dst, "tensors": len(tensors), "params": sum(t.numel() for t in tensors.values()),
            "sha256": sha256_file(dst)}
