"""mmengine model and data preprocessor for image restoration.

:class:`RestorationModel` wraps any restoration network ``(B, C, h, w) -> (B, C, h*s, w*s)``
and gives it mmengine's ``forward(inputs, data_samples, mode)`` contract:

* ``mode='loss'``: ``dict(loss_pix=...)`` (L1 or Charbonnier against ``data_samples[i]['gt']``);
* ``mode='predict'``: one ``dict(pred=(C, H, W) tensor, gt=..., img_path=...)`` per image,
  the format :mod:`vmamba_zoo.mm.restoration_metrics` consumes; images may differ in
  size, and large ones can be restored tile by tile (``test_cfg=dict(tile_size=...)``);
* ``mode='tensor'``: the raw network output.

Registered in mmengine's root ``MODELS`` by :mod:`vmamba_zoo.mm.restoration`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.registry import MODELS
from torch import nn

from ..restoration.losses import build_pixel_loss
from ..restoration.registry import adapt_checkpoint
from ..restoration.tiling import forward_padded, tiled_forward

__all__ = ["RestorationDataPreprocessor", "RestorationModel"]

Inputs = Union[torch.Tensor, List[torch.Tensor]]


class RestorationDataPreprocessor(BaseDataPreprocessor):
    """Moves a batch to the model's device and stacks equally sized images.

    Accepts the output of mmengine's default ``pseudo_collate``: ``inputs`` a list of
    (C, h, w) tensors (or an already stacked (B, C, h, w) tensor) and ``data_samples`` a
    dict of per-image lists (or a list of per-image dicts) holding ``gt`` (C, H, W); the
    samples come out as a list of per-image dicts.  Inputs of equal size are stacked into one
    (B, C, h, w) tensor; differently sized validation images stay a list.
    """

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        data = self.cast_data(data)
        inputs = data["inputs"]
        if isinstance(inputs, (list, tuple)):
            if len({tuple(t.shape) for t in inputs}) == 1:
                inputs = torch.stack(list(inputs), dim=0)
            elif training:
                raise ValueError("training batches must hold equally sized crops; set the dataset's gt_size")
            else:
                inputs = list(inputs)
        return dict(inputs=inputs, data_samples=self._split_samples(data.get("data_samples")))

    @staticmethod
    def _split_samples(samples: Any) -> Optional[List[Dict[str, Any]]]:
        """``pseudo_collate`` turns a list of per-image dicts into a dict of lists; undo that."""
        if samples is None or isinstance(samples, (list, tuple)):
            return None if samples is None else list(samples)
        if isinstance(samples, Mapping):
            lengths = {len(v) for v in samples.values()}
            if len(lengths) != 1:
                raise ValueError(f"data_samples fields have different batch sizes: {sorted(lengths)}")
            n = lengths.pop()
            return [{k: v[i] for k, v in samples.items()} for i in range(n)]
        raise TypeError(f"data_samples must be a list of dicts or a dict of lists, got {type(samples).__name__}")


class RestorationModel(BaseModel):
    """A restoration network trained with a pixel loss, evaluated image by image.

    Args:
        network: the network, or its config dict (built from mmengine's ``MODELS``).
        loss: ``'l1'`` or ``'charbonnier'`` (BasicSR's definition, ``eps`` under the root).
        loss_weight: multiplier of the pixel loss.
        charbonnier_eps: Charbonnier epsilon (MambaIR's denoising configs use 1e-3).
        scale: upscaling factor of the network (1 for denoising / JPEG); by default the
            network's ``upscale`` attribute (1 if it has none).
        test_cfg: inference options: ``tile_size`` (None = whole image), ``overlap``,
            ``multiple`` (pad inputs to a multiple, for U-Nets), ``tile_batch_size``.
        data_preprocessor: defaults to :class:`RestorationDataPreprocessor`.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        network: Union[nn.Module, Mapping],
        loss: str = "l1",
        loss_weight: float = 1.0,
        charbonnier_eps: float = 1e-3,
        scale: Optional[int] = None,
        test_cfg: Optional[Mapping] = None,
        data_preprocessor: Optional[Union[Mapping, nn.Module]] = None,
        init_cfg: Optional[Mapping] = None,
    ) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type="RestorationDataPreprocessor")
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.network = MODELS.build(network) if isinstance(network, Mapping) else network
        if not isinstance(self.network, nn.Module):
            raise TypeError(f"network must be an nn.Module or a config dict, got {type(network).__name__}")
        self.pixel_loss = build_pixel_loss(loss, loss_weight, charbonnier_eps)
        net_scale = getattr(self.network, "upscale", None)
        if scale is None:
            scale = int(net_scale) if net_scale is not None else 1
        elif net_scale is not None and int(net_scale) != int(scale):
            raise ValueError(f"scale={scale} contradicts the network's upscale={net_scale}; drop scale or fix it")
        self.scale = int(scale)
        cfg = dict(tile_size=None, overlap=32, multiple=1, tile_batch_size=1)
        unknown = set(test_cfg or {}) - set(cfg)
        if unknown:
            raise ValueError(f"unknown test_cfg keys {sorted(unknown)}; allowed: {sorted(cfg)}")
        cfg.update(test_cfg or {})
        self.test_cfg = cfg

    # ------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Also accept a bare network checkpoint (e.g. an official BasicSR ``{'params': ...}`` file).

        mmengine's ``load_checkpoint`` (``load_from``, ``tools/test.py CONFIG CKPT``) hands the
        checkpoint to the wrapper; when no key is under ``network.``, the keys are taken as the
        network's own (converted by the network family's ``checkpoint_filter_fn``) and moved
        under ``network.`` before loading.
        """
        net_prefix = prefix + "network."
        if not any(k.startswith(net_prefix) for k in state_dict):
            raw = {k[len(prefix):]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}
            if raw:
                for k, v in adapt_checkpoint(raw, self.network).items():
                    state_dict[net_prefix + k] = v
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _stack_gt(data_samples: Optional[Sequence[Mapping]]) -> torch.Tensor:
        if not data_samples or any("gt" not in s for s in data_samples):
            raise ValueError("mode='loss' needs data_samples with a 'gt' tensor each")
        return torch.stack([s["gt"] for s in data_samples], dim=0)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """Restore a (B, C, h, w) batch at inference, whole or tiled per ``test_cfg``.

        Returns:
            (B, C, h*scale, w*scale) unclamped output.
        """
        cfg = self.test_cfg
        if cfg["tile_size"] is None:
            return forward_padded(self.network, x, self.scale, cfg["multiple"])
        return tiled_forward(self.network, x, tile_size=cfg["tile_size"], overlap=cfg["overlap"], scale=self.scale,
                             multiple=cfg["multiple"], tile_batch_size=cfg["tile_batch_size"])

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: Inputs, data_samples: Optional[Sequence[Mapping]] = None, mode: str = "tensor"):
        """mmengine entry point.

        Args:
            inputs: (B, C, h, w) tensor, or a list of (C, h, w) tensors (predict only).
            data_samples: one dict per image (``gt`` (C, H, W) for loss/metrics).
            mode: ``'loss'``, ``'predict'`` or ``'tensor'``.
        """
        if mode == "loss":
            if not torch.is_tensor(inputs):
                raise ValueError("mode='loss' needs a stacked (B, C, h, w) input tensor")
            pred = self.network(inputs)
            gt = self._stack_gt(data_samples)
            if pred.shape != gt.shape:
                raise ValueError(f"network output {tuple(pred.shape)} does not match gt {tuple(gt.shape)}; "
                                 f"check the network's upscale and the dataset's degradation")
            return dict(loss_pix=self.pixel_loss(pred, gt))
        if mode == "predict":
            images = list(inputs) if not torch.is_tensor(inputs) else list(inputs.unbind(0))
            samples = list(data_samples) if data_samples is not None else [dict() for _ in images]
            outputs = []
            for img, sample in zip(images, samples):
                pred = self.restore(img[None])[0]
                out = dict(sample)
                out["pred"] = pred
                outputs.append(out)
            return outputs
        if mode == "tensor":
            if not torch.is_tensor(inputs):
                raise ValueError("mode='tensor' needs a stacked (B, C, h, w) input tensor")
            return self.network(inputs)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")
