"""Pretrained weights: download through timm's cache, integrity checks, safe loading, offline use.

The zoo's model families declare their weights in timm pretrained cfgs
(``generate_default_cfgs``): an official ``url`` (GitHub release), an ``hf_hub_id``
or a local ``file``.  This module adds what timm's own loader leaves out:

* **Integrity.**  A cached file is checked before it is loaded: against a sha256
  declared in the cfg (``notes=("sha256=<64 hex>", "size=<bytes>")`` -- timm's
  ``PretrainedCfg`` has no digest field), against timm/torch.hub's hash-prefix
  file-name convention (``name-<sha256 prefix>.pth``), against the digest recorded
  in a ``<file>.sha256`` side file when this module downloaded it, and otherwise
  structurally (every zip member's CRC-32 for torch checkpoints, the header and
  length for safetensors).  A bad file is deleted and downloaded again; it is never
  loaded half-way.
* **Offline use.**  With ``HF_HUB_OFFLINE=1`` or without network, only the cache is
  used; a missing file raises :class:`WeightsUnavailableError` naming the file, its
  URL and the exact path to put it at.
* **Safe loading.**  Always ``torch.load(weights_only=True)``.  Official VMamba-style
  checkpoints pickle a yacs ``CfgNode`` training config next to the weights; such
  known config containers are read as plain ``OrderedDict``s (nothing from yacs is
  imported or executed), numpy scalars as numpy scalars.  Anything else is refused.

Downloads go through timm's ``download_cached_file`` (torch.hub's
``download_url_to_file``: temp file, then rename) into timm's cache,
``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``), the
same place ``timm.create_model(..., pretrained=True)`` uses; Hub weights go through
``huggingface_hub`` into ``$HF_HOME/hub``.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import http.client
import json
import logging
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import torch

__all__ = [
    "WeightsError",
    "WeightsUnavailableError",
    "CorruptWeightsError",
    "WeightSource",
    "is_offline",
    "resolve_weight_source",
    "weights_status",
    "fetch_weights",
    "verify_file",
    "sha256_file",
    "load_checkpoint_file",
    "load_pretrained_state_dict",
    "create_model",
    "prepare_pretrained_cfg",
    "release_pretrained_state_dict",
]

_logger = logging.getLogger(__name__)

#: torch.hub's convention: ``name-<sha256 prefix>.ext`` (at least 8 hex digits here).
_HASH_PREFIX_RE = re.compile(r"-([a-f0-9]{8,64})\.")
_NOTE_SHA256_RE = re.compile(r"^sha256[=:]\s*([0-9a-fA-F]{64})$")
_NOTE_SIZE_RE = re.compile(r"^size[=:]\s*(\d+)$")
_HF_DEFAULT_FILES = ("model.safetensors", "pytorch_model.bin")
#: File-name suffixes of weight files; a URL whose last path part has none of them
#: (``.../download?id=...``) is cached under ``<arch>.<tag>.pth``.
_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".tar", ".pkl", ".npz", ".h5")

#: Pickled training-config containers found in official checkpoints.  They are dict
#: subclasses holding only plain values; they are rebuilt as OrderedDicts.
_CONFIG_CONTAINERS = (
    "yacs.config.CfgNode",
    "mmengine.config.config.ConfigDict",
    "addict.addict.Dict",
)
#: Keys under which checkpoints store the model's state dict, in order of preference.
_STATE_DICT_KEYS = ("model", "state_dict", "params_ema", "params", "module")


class WeightsError(RuntimeError):
    """Pretrained weights could not be provided."""


class WeightsUnavailableError(WeightsError):
    """The weights are neither cached nor downloadable (offline, no network, no source)."""


class CorruptWeightsError(WeightsError):
    """A weights file is truncated, corrupted or not a checkpoint."""


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where a model's pretrained weights come from and how to check them.

    Attributes:
        model: model name (``arch`` or ``arch.tag``).
        kind: ``"url"``, ``"hf-hub"``, ``"file"`` or ``"none"``.
        location: the URL, Hub repo id or local path ('' for ``"none"``).
        filename: file name in the cache (Hub: None = timm's default file order).
        sha256: full expected sha256, if declared.
        hash_prefix: expected sha256 prefix from the file name, if any.
        size: expected size in bytes, if declared.
        cache_path: where the file is (or will be) cached; None for the Hub.
        license: the weights' license from the cfg.
    """

    model: str
    kind: str
    location: str = ""
    filename: Optional[str] = None
    sha256: Optional[str] = None
    hash_prefix: Optional[str] = None
    size: Optional[int] = None
    cache_path: Optional[Path] = None
    license: Optional[str] = None

    def describe(self) -> str:
        """One line: the source, for logs and the CLI."""
        if self.kind == "none":
            return "no pretrained weights"
        return f"{self.kind}: {self.location}" + (f" ({self.filename})" if self.kind == "hf-hub" and self.filename else "")


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value (read at call time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _timm_cache_dir(cache_dir: Optional[Union[str, Path]]) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(torch.hub.get_dir()) / "checkpoints"


def _parse_notes(notes: Optional[Sequence[str]]) -> Tuple[Optional[str], Optional[int]]:
    sha, size = None, None
    if isinstance(notes, str):
        notes = (notes,)
    for note in notes or ():
        if m := _NOTE_SHA256_RE.match(str(note).strip()):
            sha = m.group(1).lower()
        elif m := _NOTE_SIZE_RE.match(str(note).strip()):
            size = int(m.group(1))
    return sha, size


def _resolve_cfg(model_name: str, pretrained_cfg_overlay: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    import timm
    from timm.models import resolve_pretrained_cfg, split_model_name_tag

    arch, tag = split_model_name_tag(model_name)
    if not timm.is_model(arch):
        raise ValueError(f"unknown model {model_name!r}: not registered with timm (did you `import vmamba_zoo`?)")
    cfg = resolve_pretrained_cfg(arch, pretrained_cfg=tag or None, pretrained_cfg_overlay=dict(pretrained_cfg_overlay or {}))
    return dataclasses.asdict(cfg)


def resolve_weight_source(
    model_name: str,
    pretrained_cfg_overlay: Optional[Mapping[str, Any]] = None,
    cache_dir: Optional[Union[str, Path]] = None,
) -> WeightSource:
    """Resolve a model's weight source the way timm does (file > hf-hub > url).

    Args:
        model_name: a registered timm model, optionally with a pretrained tag (``arch.tag``).
        pretrained_cfg_overlay: fields replacing the registered cfg's (as in ``timm.create_model``).
        cache_dir: cache folder for URL weights; default timm's (``$TORCH_HOME/hub/checkpoints``).

    Raises:
        ValueError: unknown model name.
    """
    return _source_from_cfg(model_name, _resolve_cfg(model_name, pretrained_cfg_overlay), cache_dir)


def _source_from_cfg(model_name: str, cfg: Mapping[str, Any], cache_dir: Optional[Union[str, Path]] = None) -> WeightSource:
    sha, size = _parse_notes(cfg.get("notes"))
    common = dict(model=model_name, sha256=sha, size=size, license=cfg.get("license"))
    if cfg.get("source") == "local-dir":
        raise WeightsError(f"{model_name}: 'local-dir' sources are loaded by timm.create_model('local-dir:...') directly")
    if cfg.get("file"):
        path = Path(cfg["file"]).expanduser()
        return WeightSource(kind="file", location=str(path), filename=path.name, cache_path=path,
                            hash_prefix=_hash_prefix(path.name), **common)
    if cfg.get("hf_hub_id") and _has_hf_hub():
        return WeightSource(kind="hf-hub", location=cfg["hf_hub_id"], filename=cfg.get("hf_hub_filename"), **common)
    url = cfg.get("url")
    if url:
        if isinstance(url, (list, tuple)):
            url, filename = url
        else:
            filename = os.path.basename(urlparse(url).path)
        if Path(filename).suffix.lower() not in _WEIGHT_SUFFIXES:
            # e.g. Google Drive's ".../download?id=...": name the cache file after the model instead,
            # so that different models never share one cache entry
            arch, tag = cfg.get("architecture") or model_name.split(".", 1)[0], cfg.get("tag")
            filename = f"{arch}.{tag}.pth" if tag else f"{arch}.pth"
        return WeightSource(kind="url", location=url, filename=filename, hash_prefix=_hash_prefix(filename),
                            cache_path=_timm_cache_dir(cache_dir) / filename, **common)
    if cfg.get("hf_hub_id"):
        raise WeightsUnavailableError(
            f"{model_name}: weights are on the Hugging Face Hub ({cfg['hf_hub_id']}) but huggingface_hub is not installed; "
            "pip install huggingface_hub")
    return WeightSource(kind="none", **common)


def _hash_prefix(filename: str) -> Optional[str]:
    m = _HASH_PREFIX_RE.search(filename)
    return m.group(1) if m else None


def _has_hf_hub() -> bool:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return False
    return True


def weights_status(
    model_name: str,
    pretrained_cfg_overlay: Optional[Mapping[str, Any]] = None,
    cache_dir: Optional[Union[str, Path]] = None,
) -> str:
    """Cheap availability check (no hashing, no network).

    Returns:
        ``"cached"`` (a local copy exists), ``"download"`` (a source exists, not cached yet)
        or ``"none"`` (no pretrained weights declared).
    """
    src = resolve_weight_source(model_name, pretrained_cfg_overlay, cache_dir=cache_dir)
    if src.kind == "none":
        return "none"
    if src.kind in ("url", "file"):
        return "cached" if src.cache_path is not None and src.cache_path.is_file() else (
            "download" if src.kind == "url" else "none")
    from huggingface_hub import try_to_load_from_cache

    names = (src.filename,) if src.filename else _HF_DEFAULT_FILES
    for name in names:
        hit = try_to_load_from_cache(src.location, name, cache_dir=_hf_cache_dir())
        if isinstance(hit, str):
            return "cached"
    return "download"


def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_sidecar(path: Path) -> Optional[str]:
    """The sha256 recorded in ``<file>.sha256`` when this module downloaded the file, if any."""
    side = _sidecar(path)
    if not side.is_file():
        return None
    text = side.read_text().split()
    if not text or not re.fullmatch(r"[0-9a-f]{64}", text[0]):
        _logger.warning("ignoring malformed digest file %s", side)
        return None
    return text[0]


def _write_sidecar(path: Path, digest: str) -> None:
    # sha256sum format, so `sha256sum -c <file>.sha256` works in the cache folder.
    _sidecar(path).write_text(f"{digest}  {path.name}\n")


def _check_structure(path: Path) -> None:
    """Cheap format check when no digest is known: zip CRCs or safetensors layout."""
    if path.suffix == ".safetensors":
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CorruptWeightsError(f"{path} is truncated (shorter than a safetensors header)")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CorruptWeightsError(f"{path} is truncated (header of {n} bytes, file of {size})")
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CorruptWeightsError(f"{path} has a corrupt safetensors header ({e})") from None
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end != size:
            raise CorruptWeightsError(f"{path} has {size} bytes, its safetensors header describes {8 + n + end}")
        return
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CorruptWeightsError(f"{path} is a damaged zip checkpoint ({e})") from None
        if bad is not None:
            raise CorruptWeightsError(f"{path} is corrupt: CRC mismatch in member {bad!r}")
        return
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic[:1] == b"\x80":
        # Legacy (non-zip) torch pickle: no checksum to test; torch.load detects truncation.
        return
    raise CorruptWeightsError(
        f"{path} is not a PyTorch checkpoint or safetensors file (a truncated download or an HTML error page?)")


def verify_file(path: Union[str, Path], source: Optional[WeightSource] = None) -> str:
    """Check a weights file; raise :class:`CorruptWeightsError` if it is bad.

    Checks, in order: declared size; declared sha256 or file-name hash prefix; the
    digest recorded in ``<file>.sha256`` at download; else the file's own structure.

    Returns:
        How it was verified: ``"sha256"``, ``"hash-prefix"``, ``"recorded-sha256"`` or ``"structure"``.
    """
    path = Path(path)
    if not path.is_file():
        raise CorruptWeightsError(f"{path} does not exist")
    size = path.stat().st_size
    if source is not None and source.size is not None and size != source.size:
        raise CorruptWeightsError(f"{path} has {size} bytes, expected {source.size}")
    if source is not None and (source.sha256 or source.hash_prefix):
        digest = sha256_file(path)
        if source.sha256:
            if digest != source.sha256:
                raise CorruptWeightsError(f"{path} has sha256 {digest}, expected {source.sha256}")
            return "sha256"
        if not digest.startswith(source.hash_prefix):
            raise CorruptWeightsError(f"{path} has sha256 {digest[:12]}..., its name promises {source.hash_prefix}")
        return "hash-prefix"
    recorded = _read_sidecar(path)
    if recorded is not None:
        digest = sha256_file(path)
        if digest != recorded:
            raise CorruptWeightsError(f"{path} has sha256 {digest}, {_sidecar(path).name} recorded {recorded}")
        return "recorded-sha256"
    _check_structure(path)
    return "structure"


def _remove(path: Path) -> None:
    for p in (path, _sidecar(path)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _download_url(src: WeightSource, progress: bool) -> Path:
    from timm.models._hub import download_cached_file

    assert src.cache_path is not None
    try:
        out = download_cached_file((src.location, src.filename), check_hash=src.hash_prefix is not None,
                                   progress=progress, cache_dir=src.cache_path.parent)
    except (OSError, http.client.HTTPException) as e:  # URLError/HTTPError are OSErrors
        raise WeightsUnavailableError(
            f"{src.model}: could not download {src.location} ({getattr(e, 'reason', e)}); download it elsewhere "
            f"and save it as {src.cache_path}") from None
    except RuntimeError as e:  # torch.hub: hash-prefix mismatch (the partial file is removed)
        raise CorruptWeightsError(f"{src.model}: download of {src.location} failed its check: {e}") from None
    return Path(out)


def _hf_cache_dir() -> str:
    """huggingface_hub's cache folder, from the environment at call time (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def _fetch_hf(src: WeightSource, progress: bool, force: bool = False) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    names = (src.filename,) if src.filename else _HF_DEFAULT_FILES
    cache_dir = _hf_cache_dir()
    if is_offline():
        for name in names:
            hit = try_to_load_from_cache(src.location, name, cache_dir=cache_dir)
            if isinstance(hit, str):
                return Path(hit)
        raise WeightsUnavailableError(
            f"{src.model}: HF_HUB_OFFLINE=1 and {src.location}/{names[0]} is not in the Hugging Face cache "
            f"{cache_dir}; run once with network (or copy that cache), or unset HF_HUB_OFFLINE")
    last: Optional[Exception] = None
    for name in names:
        try:
            return Path(hf_hub_download(src.location, name, cache_dir=cache_dir, force_download=force))
        except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError) no connection, not cached
            raise WeightsUnavailableError(
                f"{src.model}: cannot reach the Hugging Face Hub for {src.location}/{name} and it is not in the "
                f"cache {cache_dir}; run once with network or copy that cache") from None
        except EntryNotFoundError as e:  # the repo has no such file: try the next name
            last = e
    raise WeightsUnavailableError(f"{src.model}: {src.location} has none of {list(names)} ({last})")


def fetch_weights(
    model: Union[str, WeightSource],
    *,
    progress: bool = False,
    cache_dir: Optional[Union[str, Path]] = None,
    attempts: int = 2,
) -> Path:
    """Return the path of a verified local copy of a model's weights, downloading if needed.

    Args:
        model: model name (``arch[.tag]``) or a resolved :class:`WeightSource`.
        progress: show a download progress bar (stderr).
        cache_dir: URL-weights cache folder; default timm's.
        attempts: downloads to try when a fresh download fails verification.

    Raises:
        WeightsUnavailableError: no source, offline without a cached copy, or no network.
        CorruptWeightsError: the file stays corrupt after ``attempts`` downloads (it is deleted).
    """
    src = model if isinstance(model, WeightSource) else resolve_weight_source(model, cache_dir=cache_dir)
    if src.kind == "none":
        raise WeightsUnavailableError(f"{src.model} has no pretrained weights; use pretrained=False")
    if src.kind == "file":
        path = Path(src.location)
        if not path.is_file():
            raise WeightsUnavailableError(f"{src.model}: weights file {path} does not exist")
        verify_file(path, src)  # a user's own file is never deleted
        return path
    if src.kind == "hf-hub":
        path = _fetch_hf(src, progress)
        try:
            verify_file(path, src)
        except CorruptWeightsError as e:
            if is_offline():
                raise
            _logger.warning("cached Hub file is corrupt, downloading again: %s", e)
            path = _fetch_hf(src, progress, force=True)
            verify_file(path, src)
        return path

    path = src.cache_path
    assert path is not None
    state = "is not in the cache"
    if path.is_file():
        try:
            how = verify_file(path, src)
            _logger.info("using cached %s (verified: %s)", path, how)
            return path
        except CorruptWeightsError as e:
            _logger.warning("cached weights are corrupt, downloading again: %s", e)
            _remove(path)
            state = "was corrupt in the cache (removed)"
    if is_offline():
        raise WeightsUnavailableError(
            f"{src.model}: HF_HUB_OFFLINE=1 and {src.filename} {state}; download {src.location} "
            f"and save it as {path}")
    error: Optional[CorruptWeightsError] = None
    for attempt in range(1, max(1, attempts) + 1):
        try:
            path = _download_url(src, progress)
            how = verify_file(path, src)
        except CorruptWeightsError as e:
            error = e
            _remove(path)
            _logger.warning("download %d/%d of %s is corrupt: %s", attempt, attempts, src.location, e)
            continue
        if how == "structure":
            _write_sidecar(path, sha256_file(path))
        return path
    raise CorruptWeightsError(f"{src.model}: {error} (the file was removed; run again to retry the download)")


def _safe_globals_for(path: Path) -> list:
    """weights_only allow-list entries for the known-harmless globals a checkpoint pickles."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (RuntimeError, ValueError, OSError):  # legacy (non-zip) format: nothing to inspect
        return []
    entries, refused = [], []
    for name in names:
        if name in _CONFIG_CONTAINERS:
            entries.append((collections.OrderedDict, name))
        elif name.startswith(("numpy.", "numpy._core.")):
            obj = _numpy_global(name)
            (entries.append((obj, name)) if obj is not None else refused.append(name))
        else:
            refused.append(name)
    if any(name == "numpy.dtype" for name in names):
        entries.extend(_numpy_dtype_classes())  # a pickled np.dtype is rebuilt as e.g. Float64DType
    if refused:
        raise WeightsError(
            f"{path} pickles objects that safe (weights_only) loading refuses: {refused}. If you trust the file, "
            "re-save its state dict: torch.save(torch.load(f, weights_only=False)['model'], 'clean.pth')")
    return entries


def _numpy_global(name: str) -> Any:
    """The few numpy objects torch's docs allow for weights_only loading (scalars and dtypes)."""
    import numpy as np

    leaf = name.rsplit(".", 1)[-1]
    if leaf == "scalar":
        core = getattr(np, "_core", None) or np.core
        return core.multiarray.scalar
    if name in ("numpy.dtype",):
        return np.dtype
    if name.startswith("numpy.dtypes.") and hasattr(np, "dtypes"):
        return getattr(np.dtypes, leaf, None)
    return None


def _numpy_dtype_classes() -> list:
    import numpy as np

    dtypes = getattr(np, "dtypes", None)
    if dtypes is None:
        return []
    return [v for k, v in vars(dtypes).items() if k.endswith("DType") and isinstance(v, type)]


def load_checkpoint_file(path: Union[str, Path], key: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Load a checkpoint safely and return the model's state dict (on CPU).

    Args:
        path: ``.safetensors``, or a torch checkpoint (plain state dict, or a dict holding
            it under ``model`` / ``state_dict`` / ``params_ema`` / ``params`` / ``module``).
        key: the key holding the state dict (default: the first of those present).

    Raises:
        CorruptWeightsError: unreadable/truncated file.
        WeightsError: unsafe pickled objects, or no state dict found.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as e:
            raise CorruptWeightsError(f"{path} is not a readable safetensors file ({e})") from None
    entries = _safe_globals_for(path)
    try:
        with torch.serialization.safe_globals(entries):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, OSError, IndexError) as e:
        raise CorruptWeightsError(f"{path} is not a readable checkpoint ({str(e).splitlines()[0]})") from None
    except pickle.UnpicklingError as e:  # refused by weights_only: never fall back to unsafe loading
        raise WeightsError(f"{path} cannot be loaded safely: {str(e).splitlines()[0]}") from None
    return _extract_state_dict(ckpt, path, key)


def _extract_state_dict(ckpt: Any, path: Path, key: Optional[str]) -> Dict[str, torch.Tensor]:
    if not isinstance(ckpt, Mapping):
        raise WeightsError(f"{path} holds a {type(ckpt).__name__}, not a state dict")
    if key is not None:
        if key not in ckpt:
            raise WeightsError(f"{path} has no key {key!r}; its keys: {sorted(map(str, ckpt))[:10]}")
        sd = ckpt[key]
    elif all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        sd = ckpt
    else:
        found = next((k for k in _STATE_DICT_KEYS if isinstance(ckpt.get(k), Mapping)), None)
        if found is None:
            raise WeightsError(f"{path} has no state dict under any of {list(_STATE_DICT_KEYS)}; "
                               f"its keys: {sorted(map(str, ckpt))[:10]}")
        sd = ckpt[found]
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    dropped = sorted(set(sd) - set(tensors))
    if dropped:
        _logger.info("ignoring %d non-tensor entries in %s: %s", len(dropped), path, dropped[:5])
    return tensors


def load_pretrained_state_dict(
    model_name: str,
    pretrained_cfg_overlay: Optional[Mapping[str, Any]] = None,
    *,
    progress: bool = False,
    cache_dir: Optional[Union[str, Path]] = None,
) -> Tuple[Dict[str, torch.Tensor], Path]:
    """Fetch (or find in the cache), verify and safely load a model's pretrained state dict.

    Returns:
        (state dict as stored in the file -- the family's ``checkpoint_filter_fn`` is not
        applied yet, timm applies it when loading --, path of the verified file).
    """
    src = resolve_weight_source(model_name, pretrained_cfg_overlay, cache_dir=cache_dir)
    path = fetch_weights(src, progress=progress)
    try:
        return load_checkpoint_file(path), path
    except CorruptWeightsError:
        if src.kind == "url":
            _remove(path)  # passed the checks but does not load: do not keep it
        raise


def create_model(
    model_name: str,
    pretrained: bool = False,
    *,
    pretrained_cfg_overlay: Optional[Mapping[str, Any]] = None,
    progress: bool = False,
    cache_dir: Optional[Union[str, Path]] = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """``timm.create_model`` with the zoo's verified, offline-aware, safe weight loading.

    The state dict is handed to timm through ``pretrained_cfg_overlay['state_dict']``,
    so timm's ``load_pretrained`` still applies the family's ``checkpoint_filter_fn``,
    the ``in_chans`` adaptation and the classifier reset for another ``num_classes``.
    """
    import timm

    if not pretrained:
        return timm.create_model(model_name, pretrained=False, pretrained_cfg_overlay=pretrained_cfg_overlay, **kwargs)
    sd, path = load_pretrained_state_dict(model_name, pretrained_cfg_overlay, progress=progress, cache_dir=cache_dir)
    overlay = dict(pretrained_cfg_overlay or {}, state_dict=sd)
    model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict):  # do not keep a second copy of the weights alive
        cfg.pop("state_dict", None)
        cfg["file"] = str(path)
    return model


class _SharedStateDict(dict):
    """A state dict that timm's cfg handling does not deep-copy."""

    def __deepcopy__(self, memo: Dict[int, Any]) -> "_SharedStateDict":
        return self


def prepare_pretrained_cfg(
    variant: str,
    pretrained_cfg: Any = None,
    pretrained_cfg_overlay: Optional[Mapping[str, Any]] = None,
    *,
    progress: bool = False,
) -> Any:
    """For a family's ``_create_*``: resolve the pretrained cfg and put verified weights in it.

    For ``url``/``file`` sources (not ``custom_load``) the file is fetched with
    :func:`fetch_weights` (cache, integrity checks, offline errors) and read with
    :func:`load_checkpoint_file`; the state dict goes into ``cfg.state_dict``, which
    timm's ``load_pretrained`` then uses (so ``checkpoint_filter_fn``, ``in_chans`` and
    ``num_classes`` adaptation still apply).  Hub and in-memory sources are left to timm.
    Pass the result as ``pretrained_cfg=`` to ``build_model_with_cfg`` and call
    :func:`release_pretrained_state_dict` on the model afterwards.
    """
    from timm.models import resolve_pretrained_cfg

    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg,
                                 pretrained_cfg_overlay=dict(pretrained_cfg_overlay or {}))
    if cfg.state_dict or cfg.custom_load or cfg.source in ("hf-hub", "local-dir"):
        return cfg
    name = f"{variant}.{cfg.tag}" if cfg.tag else variant
    src = _source_from_cfg(name, dataclasses.asdict(cfg))
    if src.kind not in ("url", "file"):
        return cfg
    path = fetch_weights(src, progress=progress)
    try:
        state = load_checkpoint_file(path)
    except CorruptWeightsError:
        if src.kind == "url":
            _remove(path)
        raise
    return dataclasses.replace(cfg, state_dict=_SharedStateDict(state))


def release_pretrained_state_dict(model: torch.nn.Module) -> None:
    """Drop the weights :func:`prepare_pretrained_cfg` left in ``model.pretrained_cfg`` (and a wrapped model's)."""
    for owner in (model, getattr(model, "model", None)):
        cfg = getattr(owner, "pretrained_cfg", None)
        if isinstance(cfg, dict) and cfg.get("state_dict") is not None:
            cfg["state_dict"] = None
