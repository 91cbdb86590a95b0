"""mmengine hooks of the zoo.

:class:`RNGStateHook` makes ``--resume`` exact.  mmengine 0.10.7 checkpoints
hold the weights, optimizer, schedulers and message hub but no random-number
generator state, so a resumed run re-seeds and then draws different Mixup /
CutMix boxes (numpy), RandAugment ops and random crops (python ``random``),
random erasing, drop-path masks and DataLoader worker seeds (torch) than the
uninterrupted run would have.  The hook stores the python, numpy, torch (and
CUDA) generator states of every rank in the checkpoint and restores them
when training resumes.  :class:`TrainRecordHook` records every training
iteration of every rank (losses, images, times) in one JSON file.
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

__all__ = ["RNGStateHook", "TrainRecordHook", "get_rng_state", "set_rng_state"]

def get_rng_state() -> Dict[str, Any]:
    """This process's generator states, in a form ``torch.load(weights_only=True)`` accepts.

    Returns:
        ``dict(python=random.getstate(), numpy=(name, keys (624,) int64 tensor, pos,
        has_gauss, cached_gaussian), torch=ByteTensor, cuda=[ByteTensor per device])``.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(python=random.getstate(),
                 numpy=(name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore the states returned by :func:`get_rng_state`."""
    missing = {"python", "numpy", "torch"} - set(state)
    if missing:
        raise ValueError(f"RNG state lacks {sorted(missing)}; expected the output of get_rng_state()")
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) != torch.cuda.device_count():
            print_log(f"RNGStateHook: the checkpoint has {len(cuda_states)} CUDA generator states, this "
                      f"process sees {torch.cuda.device_count()} devices; CUDA generators keep their seed",
                      logger="current", level=logging.WARNING)
        else:
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the random-number generator states of all ranks in checkpoints; restore them on resume.

    Checkpoint entry: ``checkpoint['rng_states'] = dict(world_size=N, states=[state of rank 0, ...])``
    (see :func:`get_rng_state`).

    mmengine saves checkpoints on rank 0 only, so in distributed training the
    states of all ranks are gathered at the end of each training epoch (and,
    for iteration-based training, at the iterations the ``CheckpointHook``
    saves), before the ``CheckpointHook`` runs; hence the priority ``'LOW'``
    (the ``CheckpointHook`` is ``'VERY_LOW'``).  A run resumed with another
    world size keeps its seeded generators and logs a warning.

    Restoring happens in ``before_train`` (after ``Runner.resume``, which may
    re-seed), so every draw of the main processes after the resume point
    repeats the uninterrupted run's (``DefaultSampler`` derives its order from
    seed + epoch, which the resumed epoch counter gives back).

    Limits: DataLoader workers are separate processes.  Non-persistent workers
    are re-seeded at every epoch (mmengine's ``worker_init_fn``), so resuming
    repeats their draws; *persistent* workers (``persistent_workers=True``, as
    in the ImageNet configs) carry their generators across epochs, which no
    checkpoint holds, so their augmentation draws (crops, RandAugment,
    erasing) after a resume differ from the uninterrupted run's.  Mixup /
    CutMix and drop path run in the main process and are restored.  On GPUs,
    non-deterministic kernels (atomics) make runs differ regardless.
    """

    priority = "LOW"

    def __init__(self) -> None:
        self._gathered: Optional[List[Dict[str, Any]]] = None
        self._gathered_iter = -1
        self._pending: Optional[Dict[str, Any]] = None

    # -- saving ---------------------------------------------------------
    def _gather(self, runner) -> None:
        _, world_size = get_dist_info()
        if world_size > 1:
            self._gathered = all_gather_object(get_rng_state())
            self._gathered_iter = runner.iter

    def after_train_epoch(self, runner) -> None:
        self._gather(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if get_dist_info()[1] == 1:
            return
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and not hook.by_epoch and (
                    self.every_n_train_iters(runner, hook.interval) or self.is_last_train_iter(runner)):
                self._gather(runner)
                return

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        world_size = get_dist_info()[1]
        if world_size == 1:
            states = [get_rng_state()]
        elif self._gathered is not None and self._gathered_iter == runner.iter:
            states = list(self._gathered)
        else:
            print_log("RNGStateHook: this checkpoint is saved outside the gathering points (epoch ends, "
                      "CheckpointHook iterations); only rank 0's generator states are stored",
                      logger="current", level=logging.WARNING)
            states = [get_rng_state()]
        checkpoint["rng_states"] = dict(world_size=world_size, states=states)

    # -- restoring ------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, "_resume", False):
            return  # load_from (fine-tuning / evaluation): keep the configured seed
        saved = checkpoint.get("rng_states")
        if saved is None:
            print_log("RNGStateHook: the checkpoint has no generator states (saved without this hook); "
                      "the resumed run draws different random numbers than an uninterrupted one",
                      logger="current", level=logging.WARNING)
            return
        rank, world_size = get_dist_info()
        if saved["world_size"] != world_size or rank >= len(saved["states"]):
            print_log(f"RNGStateHook: the checkpoint holds the generator states of {saved['world_size']} "
                      f"process(es), this run has {world_size}; generators keep their seed",
                      logger="current", level=logging.WARNING)
            return
        self._pending = saved["states"][rank]

    def before_train(self, runner) -> None:
        if self._pending is not None:
            set_rng_state(self._pending)
            self._pending = None
            print_log("RNGStateHook: restored the generator states of the checkpoint", logger="current")


def _batch_images(data_batch: Any) -> Optional[int]:
    """Images in a rank's batch (``data_batch['inputs']``, a stacked tensor or a list), or None if unknown."""
    inputs = data_batch.get("inputs") if isinstance(data_batch, dict) else None
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0])
    if isinstance(inputs, (list, tuple)):
        return len(inputs)
    return None


@HOOKS.register_module()
class TrainRecordHook(Hook):
    """Record every training iteration of every rank and write them to one JSON file at the end.

    Per iteration and rank: the iteration index, the images of the rank's batch, the logged losses
    (``train/loss`` and every other ``train/*loss*`` scalar, each the rank's own mean over its batch: mmengine
    logs rank 0's values only), the iteration time and data time of mmengine's ``IterTimerHook``.  At the end
    of training the ranks' records are gathered (one ``all_gather_object``, nothing during training) and rank 0
    writes ``out_file`` (default ``<work_dir>/train_record.json``)::

        {"world_size": N, "ranks": [{"rank": 0, "wall_start": t, "wall_end": t, "iter": [...], "images": [...],
                                     "time": [...], "data_time": [...], "loss": [...],
                                     "losses": {"loss_cls": [...], ...}}, ...]}

    (``wall_start`` / ``wall_end``: ``time.time()`` before the first and after the last iteration.)

    ``tools/ddp_scaling.py`` reads it: throughput from the times, the global loss (the ranks' mean) to
    compare a multi-GPU run with a single-GPU run of the same total batch.

    Args:
        out_file: where rank 0 writes the record; relative paths are under the run's work_dir.
    """

    priority = "LOW"  # after RuntimeInfoHook (losses) and IterTimerHook (times) have updated the message hub

    def __init__(self, out_file: str = "train_record.json") -> None:
        self.out_file = out_file
        self._record: Dict[str, Any] = {}

    def before_train(self, runner) -> None:
        self._record = dict(rank=get_dist_info()[0], wall_start=time.time(), wall_end=None, iter=[], images=[],
                            time=[], data_time=[], loss=[], losses={})

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        hub = runner.message_hub
        record = self._record
        record["iter"].append(int(runner.iter))
        record["images"].append(_batch_images(data_batch))
        for key in ("time", "data_time", "loss"):
            scalar = hub.log_scalars.get(f"train/{key}")
            record[key].append(float(scalar.current()) if scalar is not None else None)
        for name, scalar in hub.log_scalars.items():
            if name.startswith("train/") and "loss" in name and name != "train/loss":
                record["losses"].setdefault(name[len("train/"):], []).append(float(scalar.current()))

    def after_train(self, runner) -> None:
        rank, world_size = get_dist_info()
        self._record["wall_end"] = time.time()
        records = all_gather_object(self._record) if world_size > 1 else [self._record]
        if rank != 0:
            return
        path = self.out_file if os.path.isabs(self.out_file) else os.path.join(runner.work_dir, self.out_file)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(dict(world_size=world_size, ranks=records), f)
        print_log(f"TrainRecordHook: wrote {len(records)} rank record(s) of {len(self._record['iter'])} "
                  f"iterations to {path}", logger="current")
