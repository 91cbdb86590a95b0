"""CPU distributed training (gloo) for mmengine runners.

mmengine 0.10.7 assumes CUDA for ``--launcher pytorch``: ``init_dist`` calls
``torch.cuda.set_device`` and the runner wraps the model in
``MMDistributedDataParallel(device_ids=[LOCAL_RANK])``, which
``DistributedDataParallel`` rejects for CPU modules.  :func:`setup_cpu_distributed`
initialises the process group with gloo itself (the runner then skips
``init_dist``) and selects :class:`CPUDistributedDataParallel` as the model
wrapper.  Used by ``tools/train.py``/``tools/test.py`` when CUDA is absent;
useful for CI and debugging, not for speed.
"""
from __future__ import annotations

import gc
import logging
import os
from typing import Any, List, Optional, Sequence

import torch.distributed as dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

__all__ = ["CPUDistributedDataParallel", "setup_cpu_distributed", "shutdown_distributed", "gloo_threads"]

_log = logging.getLogger(__name__)


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for CPU modules.

    Drops ``device_ids`` (DDP accepts them for single-GPU modules only) and
    turns ``SyncBatchNorm`` (CUDA only) back into ``BatchNorm``, so statistics
    are per process, as in a non-distributed run.
    """

    def __init__(self, module: nn.Module, device_ids: Optional[Sequence[int]] = None, **kwargs: Any) -> None:
        on_cpu = all(p.device.type == "cpu" for p in module.parameters())
        if on_cpu:
            module = revert_sync_batchnorm(module)
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)


def setup_cpu_distributed(cfg: Config) -> None:
    """Initialise a gloo process group from torchrun's env and pick the CPU DDP wrapper.

    Args:
        cfg: the run's config; ``model_wrapper_cfg`` is set (existing keys such
            as ``find_unused_parameters`` are kept) and
            ``env_cfg.dist_cfg.backend`` is set to ``'gloo'``.

    Raises:
        RuntimeError: the torchrun environment variables are missing.
    """
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"--launcher pytorch needs torchrun's environment; missing {missing}. "
                           "Start with: torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch")
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    wrapper = dict(cfg.get("model_wrapper_cfg") or {})
    wrapper["type"] = "CPUDistributedDataParallel"
    if "find_unused_parameters" in cfg and "find_unused_parameters" not in wrapper:
        wrapper["find_unused_parameters"] = cfg.find_unused_parameters
    cfg.model_wrapper_cfg = wrapper
    env_cfg = dict(cfg.get("env_cfg") or {})
    env_cfg["dist_cfg"] = dict(env_cfg.get("dist_cfg") or {}, backend="gloo")
    cfg.env_cfg = env_cfg


def shutdown_distributed() -> None:
    """Free what still holds the process group, wait for every rank, then tear the group down.

    ``destroy_process_group`` only drops the registry's reference: a runner left as garbage still
    holds its DDP wrapper and with it the gloo process group, whose worker threads then live until
    interpreter finalisation and can abort it ("terminate called without an active exception",
    SIGABRT, seen about once in 60 CPU torchrun launches).  Collecting the garbage first lets the
    group be destroyed here, threads joined, while the interpreter is fully alive; the caller must not
    keep the runner.  The barrier keeps a rank from tearing down while another still writes the last
    checkpoint.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
        gc.collect()
        leftover = gloo_threads()
        if leftover:
            _log.warning("%d gloo thread(s) still running after destroy_process_group(): something still holds "
                         "the process group (a runner or DDP-wrapped model kept by the caller?); the process may "
                         "abort at exit. Drop those references before shutdown_distributed().", len(leftover))


def gloo_threads() -> List[str]:
    """Names of this process's gloo threads (``gloo_*``, ``pt_gloo_*``), from ``/proc/self/task``
    (Linux; an empty list elsewhere)."""
    names = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return names
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if "gloo" in name:
            names.append(name)
    return names
