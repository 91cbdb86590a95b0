"""Checkpoint loading for OpenMMLab runs on torch >= 2.6.

torch 2.6 made ``torch.load(..., weights_only=True)`` the default, but mmengine
0.10.7 (the latest release) still calls ``torch.load(filename, map_location)``
and its checkpoints pickle more than tensors:

* ``message_hub`` holds :class:`mmengine.logging.HistoryBuffer` objects whose
  ``_statistics_methods`` dict is pickled as ``getattr(HistoryBuffer, 'min')``
  and friends;
* log values are numpy arrays and scalars (``numpy._core.multiarray`` names
  with numpy 2, ``numpy.core.multiarray`` names in files written with numpy 1,
  e.g. the official VMamba detection/segmentation checkpoints).

So ``--resume`` and ``load_from`` fail with ``Unsupported global``.  Rather than
switching to ``weights_only=False`` (which executes arbitrary pickled code), we
keep torch's restricted unpickler and allow-list exactly these globals
(:func:`register_mmengine_safe_globals`).  ``builtins.getattr`` is *not*
allowed as such: it is mapped to :func:`_history_buffer_getattr`, which only
resolves HistoryBuffer's statistics methods and refuses anything else.

:func:`load_checkpoint_file` additionally reads classification checkpoints of
the official projects, which pickle training-time objects such as a yacs
``CfgNode`` (VMamba) or ``argparse.Namespace``: such files are read again with
an unpickler that accepts the same globals as torch's restricted one and
replaces every other global by an inert :class:`UnpickledObject` (a dict that
records its constructor arguments and state), so no foreign code runs and the
tensors come out unchanged.  :func:`register_checkpoint_loader` makes
mmengine's ``CheckpointLoader`` (``load_from``, ``--resume``, evaluation) use it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import types
from typing import Any, Dict, List, Tuple, Union
from urllib.parse import urlparse

import numpy as np
import torch

__all__ = [
    "UnpickledObject",
    "mmengine_safe_globals",
    "register_mmengine_safe_globals",
    "register_checkpoint_loader",
    "load_checkpoint_file",
    "unwrap_state_dict",
]

_LOGGER = logging.getLogger(__name__)

_HISTORY_BUFFER_METHODS = frozenset({"min", "max", "mean", "current"})


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` inside restricted unpickling.

    mmengine pickles ``HistoryBuffer._statistics_methods`` as
    ``getattr(HistoryBuffer, 'min')`` etc.; this resolves exactly those and
    raises for anything else (a general ``getattr`` would allow arbitrary code
    execution from a crafted file).
    """
    from mmengine.logging import HistoryBuffer

    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f"refusing getattr({obj!r}, {name!r}) while unpickling a checkpoint: only "
        f"HistoryBuffer.{{{', '.join(sorted(_HISTORY_BUFFER_METHODS))}}} are allowed")


def mmengine_safe_globals() -> List[Union[Any, Tuple[Any, str]]]:
    """Globals (in ``torch.serialization.add_safe_globals`` form) that
    mmengine 0.10.x checkpoints need besides tensors."""
    from mmengine.logging import HistoryBuffer

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    entries: List[Union[Any, Tuple[Any, str]]] = [
        (HistoryBuffer, "mmengine.logging.history_buffer.HistoryBuffer"),
        (_history_buffer_getattr, "builtins.getattr"),
        (_history_buffer_getattr, "__builtin__.getattr"),
        np.ndarray,
        np.dtype,
    ]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        entries.append((multiarray._reconstruct, f"{mod}._reconstruct"))
        entries.append((multiarray.scalar, f"{mod}.scalar"))
    # numpy >= 1.25 pickles dtypes of arrays as numpy.dtypes.<Name>DType classes.
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        entries += [getattr(dtypes, n) for n in getattr(dtypes, "__all__", []) if hasattr(dtypes, n)]
    return entries


def _safe_globals_context(entries: List[Union[Any, Tuple[Any, str]]]) -> Any:
    """``torch.serialization.safe_globals(entries)`` (torch >= 2.5), else a no-op context."""
    ctx = getattr(torch.serialization, "safe_globals", None)
    return ctx(entries) if ctx is not None else contextlib.nullcontext()


def register_mmengine_safe_globals() -> None:
    """Allow-list :func:`mmengine_safe_globals` process-wide.

    Called by ``tools/train.py`` and ``tools/test.py`` before the runner is
    built, so that ``--resume``, ``load_from`` and evaluation of official
    mmengine checkpoints work with torch's default ``weights_only=True``.
    It only widens what torch's restricted unpickler accepts by the listed
    mmengine/numpy types; nothing is loaded with ``weights_only=False``.
    """
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no allow-list (and loads with weights_only=False by default)
        add(mmengine_safe_globals())


class UnpickledObject(dict):
    """Inert stand-in for a pickled object whose class is not allow-listed.

    It never runs foreign code: constructor arguments are kept in
    ``args``/``kwargs``, pickled state in ``state``, dict items as items.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"UnpickledObject(args={self.args!r}, items={dict(self)!r})"


def _download(url: str) -> str:
    """Download ``url`` once into torch hub's checkpoint cache; return the path."""
    cache_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, os.path.basename(urlparse(url).path))
    if not os.path.isfile(path):
        _LOGGER.info("downloading %s to %s", url, path)
        torch.hub.download_url_to_file(url, path, progress=False)
    return path


def _allowed_globals() -> Dict[str, Any]:
    """Name -> object of every global torch's ``weights_only`` unpickler accepts, plus
    :func:`mmengine_safe_globals`."""
    from torch import _weights_only_unpickler as wou

    allowed: Dict[str, Any] = dict(wou._get_allowed_globals())
    user = getattr(wou, "_get_user_allowed_globals", None)  # torch >= 2.4
    if user is not None:
        allowed.update(user())
    for entry in mmengine_safe_globals():
        obj, name = entry if isinstance(entry, tuple) else (entry, f"{entry.__module__}.{entry.__qualname__}")
        allowed[name] = obj
    return allowed


def _placeholder_pickle_module(foreign: set) -> types.SimpleNamespace:
    """A ``pickle_module`` for ``torch.load`` whose unpickler resolves allow-listed
    globals only and replaces every other one by :class:`UnpickledObject` (recorded in
    ``foreign``).  Allow-listed callables are the ones torch's weights-only unpickler
    would call too, so no foreign code can run."""
    allowed = _allowed_globals()

    class PlaceholderUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            obj = allowed.get(f"{module}.{name}")
            if obj is None:
                foreign.add(f"{module}.{name}")
                return UnpickledObject
            return obj

    def load(file: Any, **kwargs: Any) -> Any:
        return PlaceholderUnpickler(file, **kwargs).load()

    return types.SimpleNamespace(Unpickler=PlaceholderUnpickler, load=load, __name__="placeholder_pickle")


def load_checkpoint_file(filename: str, map_location: Union[str, torch.device] = "cpu") -> Any:
    """Load a checkpoint without executing pickled code.

    First torch's restricted (``weights_only``) unpickler with
    :func:`mmengine_safe_globals` allowed; if the file pickles other objects,
    it is read again with an unpickler that accepts the same globals and turns
    every other one into an inert :class:`UnpickledObject` placeholder.

    Args:
        filename: local path, ``http(s)://`` URL (cached in torch hub's
            directory), or any other scheme mmengine's ``CheckpointLoader``
            knows (``s3://``, ``open-mmlab://``, ...).
        map_location: passed to ``torch.load``.

    Returns:
        The unpickled object.  mmengine/numpy objects are restored as such;
        objects of any other class (e.g. VMamba's yacs ``config``) are
        :class:`UnpickledObject` placeholders.
    """
    if filename.startswith(("http://", "https://")):
        filename = _download(filename)
    elif "://" in filename:
        from mmengine.runner import CheckpointLoader

        with _safe_globals_context(mmengine_safe_globals()):
            return CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"checkpoint file not found: {filename!r}")
    try:
        with _safe_globals_context(mmengine_safe_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        foreign: set = set()
        out = torch.load(filename, map_location=map_location, weights_only=False,
                         pickle_module=_placeholder_pickle_module(foreign))
        _LOGGER.info("%s: pickled objects of %s were loaded as inert UnpickledObject placeholders",
                     filename, ", ".join(sorted(foreign)) or "no foreign class")
        return out


def register_checkpoint_loader() -> None:
    """Make mmengine's ``CheckpointLoader`` use :func:`load_checkpoint_file` for
    local files and ``http(s)://`` URLs.

    After this, ``load_from``, ``--resume`` and ``tools/test.py`` read
    checkpoints that pickle foreign objects (official classification
    checkpoints with a yacs config, ...) without running pickled code.
    mmengine's own local/HTTP loaders differ only in calling ``torch.load``
    with torch's default ``weights_only``.
    """
    from mmengine.runner import CheckpointLoader

    def _local(filename: str, map_location: Any = None) -> Any:
        if "://" in filename:
            raise ValueError(f"no checkpoint loader is registered for the scheme of {filename!r}")
        return load_checkpoint_file(os.path.expanduser(filename), map_location or "cpu")

    def _http(filename: str, map_location: Any = None, model_dir: Any = None, progress: bool = False) -> Any:
        return load_checkpoint_file(filename, map_location or "cpu")

    CheckpointLoader.register_scheme(prefixes="", loader=_local, force=True)
    CheckpointLoader.register_scheme(prefixes=("http://", "https://"), loader=_http, force=True)


def unwrap_state_dict(checkpoint: Any, key: Union[str, None] = None) -> Dict[str, torch.Tensor]:
    """Return the state dict inside a checkpoint dict.

    Args:
        checkpoint: what :func:`load_checkpoint_file` returned.
        key: entry to take (e.g. ``'model_ema'``).  ``None`` picks
            ``'state_dict'`` (mmengine, Lightning, EfficientVMamba), then
            ``'model'`` (VMamba, Swin, DeiT-style trainers), else the
            checkpoint itself when it already maps names to tensors.

    Returns:
        ``{name: tensor}`` with DataParallel ``module.`` prefixes removed.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f"expected a checkpoint dict, got {type(checkpoint).__name__}")
    if key is not None:
        if key not in checkpoint:
            raise KeyError(f"checkpoint has no entry {key!r}; entries: {sorted(map(str, checkpoint))}")
        sd = checkpoint[key]
    elif isinstance(checkpoint.get("state_dict"), dict):
        sd = checkpoint["state_dict"]
    elif isinstance(checkpoint.get("model"), dict):
        sd = checkpoint["model"]
    else:
        sd = checkpoint
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(
            f"no tensors found in the checkpoint (entries: {sorted(map(str, sd))[:10]}); "
            "pass the entry holding the weights explicitly (e.g. state_dict_key='model_ema')")
    out = {}
    for k, v in tensors.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out
