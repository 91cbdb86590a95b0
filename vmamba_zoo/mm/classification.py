"""Image classification with mmengine: model, dataset and metric for ``tools/train.py``.

OpenMMLab's classification toolbox (mmpretrain) is not a dependency of the
zoo, so the three pieces a classification run needs are here, registered in
mmengine's root registries (configs need no ``default_scope``):

* :class:`ZooClassifier`: any timm model (zoo or timm) with the DeiT/Swin
  training loss (Mixup/CutMix + label smoothing through ``timm.data.Mixup``);
* :class:`ZooImageFolderDataset`: an ImageNet-style folder
  (``root/<class>/<image>``) or a ``path label`` list file, with timm's
  ``create_transform`` (RandAugment, random erasing, ...) as the pipeline, as
  in the official VMamba/Swin trainers;
* :class:`ZooAccuracy`: top-k accuracy in percent (``accuracy/top1``, ...).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn.functional as F
from mmengine.dataset import BaseDataset
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, METRICS, MODELS
from PIL import Image, ImageOps
from timm.data import Mixup, create_transform
from timm.data.auto_augment import AugmentOp
from timm.loss import SoftTargetCrossEntropy

from . import hooks  # noqa: F401  (registers RNGStateHook, used by the classification configs)
from .backbone import find_checkpoint_filter_fn
from .checkpoint import load_checkpoint_file, unwrap_state_dict

__all__ = ["ZooClassifier", "ZooImageFolderDataset", "ZooAccuracy", "IMG_EXTENSIONS"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize op, also for 0 bits: RandAugment's increasing posterize ('inc1' policies) keeps
    ``4 - int(magnitude / 10 * 4)`` bits, 0 at the top magnitude (which ``mstd`` noise reaches), meaning a black
    image, which is what Pillow < 13 returned; Pillow >= 13 raises ``ValueError`` for 0 bits, and an ImageNet
    recipe with ``rand-m9-mstd0.5-inc1`` (2 of 15 ops per image, each applied with probability 0.5, the
    magnitude N(9, 0.5) clipped at 10) then fails about one batch of 128 images in six."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _with_zero_bit_posterize(transform: Any) -> Any:
    """``transform`` (a timm ``create_transform`` result) with the posterize ops of its auto-augmentation
    (``transform.transforms[*].ops``) running :func:`_posterize`; changes these op instances only."""
    for step in getattr(transform, "transforms", ()):
        for op in getattr(step, "ops", ()):
            if isinstance(op, AugmentOp) and op.name.startswith("Posterize"):
                op.aug_fn = _posterize
    return transform


@MODELS.register_module()
class ZooClassifier(BaseModel):
    """A timm classifier as an mmengine model.

    Args:
        model_name: timm model name (``'vmamba_tiny_s1l8'``, ...).
        num_classes: classifier width.
        mixup: ``timm.data.Mixup`` arguments (``mixup_alpha``, ``cutmix_alpha``,
            ``prob``, ``switch_prob``, ``mode``) applied to training batches, or
            ``None`` for plain label-smoothed cross entropy.
        label_smoothing: label smoothing of the targets.
        timm_pretrained: load timm's ``pretrained_cfg`` weights (fine-tuning).
        init_cfg: ``dict(type='Pretrained', checkpoint=..., state_dict_key=None)``
            loads an official or zoo checkpoint through the family's
            ``checkpoint_filter_fn`` (with ``runner.train``'s ``init_weights``).
        data_preprocessor: mmengine data preprocessor config (default: move
            to device; the dataset already normalises).
        **model_kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ...).

    Data:
        ``inputs`` ``(B, 3, H, W)`` float, ``data_samples`` ``(B,)`` int64 labels.
        ``mode='loss'`` returns ``{'loss': scalar}``, ``mode='predict'`` a list
        of ``{'pred_score': (num_classes,), 'gt_label': int}``, ``mode='tensor'``
        the logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        model_name: str,
        num_classes: int = 1000,
        mixup: Optional[Dict[str, Any]] = None,
        label_smoothing: float = 0.1,
        timm_pretrained: bool = False,
        init_cfg: Optional[dict] = None,
        data_preprocessor: Optional[dict] = None,
        **model_kwargs: Any,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not timm.is_model(model_name):
            raise ValueError(f"unknown timm model {model_name!r}; import the package that registers it "
                             "(custom_imports=dict(imports=['vmamba_zoo.mm']))")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.model = timm.create_model(model_name, pretrained=timm_pretrained, num_classes=num_classes,
                                       **model_kwargs)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.mixup = Mixup(**mixup, label_smoothing=label_smoothing, num_classes=num_classes) if mixup else None
        self._soft_ce = SoftTargetCrossEntropy()
        self.register_load_state_dict_pre_hook(_convert_classifier_checkpoint)

    def init_weights(self) -> None:
        """Load a ``Pretrained`` init_cfg; the timm model is initialised by its constructor."""
        cfg = self.init_cfg
        if cfg and cfg.get("type") == "Pretrained":
            cfg = dict(cfg)
            self.load_pretrained(cfg["checkpoint"], cfg.get("state_dict_key"))
        elif cfg:
            super().init_weights()
        self._is_init = True

    def load_pretrained(self, checkpoint: str, state_dict_key: Optional[str] = None) -> Tuple[List[str], List[str]]:
        """Load a (possibly official-layout) checkpoint; classifier weights of another
        width are skipped.  Raises when no key matches.  Returns (missing, unexpected)."""
        sd = unwrap_state_dict(load_checkpoint_file(checkpoint), state_dict_key)
        if any(k.startswith("model.") for k in sd):
            sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
        filter_fn = find_checkpoint_filter_fn(self.model)
        if filter_fn is not None:
            sd = filter_fn(sd, self.model)
        own = self.model.state_dict()
        matched = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
        if not matched:
            raise RuntimeError(f"{checkpoint}: no key matches {type(self.model).__name__}")
        bad = sorted(k for k, v in sd.items() if k in own and v.shape != own[k].shape)
        head = set(self.model.pretrained_cfg.get("classifier", "head") if hasattr(self.model, "pretrained_cfg")
                   else "head")
        if any(not any(k.startswith(h) for h in ([head] if isinstance(head, str) else head)) for k in bad):
            raise RuntimeError(f"{checkpoint}: shape mismatch outside the classifier: {bad[:10]}")
        self.model.load_state_dict(matched, strict=False)
        missing = sorted(k for k in own if k not in matched)
        unexpected = sorted(k for k in sd if k not in own)
        from mmengine.logging import print_log
        print_log(f"ZooClassifier: loaded {len(matched)}/{len(own)} tensors from {checkpoint}; "
                  f"missing: {missing or 'none'}; unexpected: {unexpected or 'none'}", logger="current", level=20)
        return missing, unexpected

    def forward(self, inputs: torch.Tensor, data_samples: Optional[torch.Tensor] = None,
                mode: str = "tensor") -> Union[torch.Tensor, Dict[str, torch.Tensor], List[Dict[str, Any]]]:
        if mode == "loss":
            if data_samples is None:
                raise ValueError("mode='loss' needs the labels as data_samples")
            if self.mixup is not None:
                if inputs.shape[0] % 2:
                    raise ValueError(f"Mixup/CutMix needs an even batch size, got {inputs.shape[0]}")
                inputs, targets = self.mixup(inputs, data_samples)
                return {"loss": self._soft_ce(self.model(inputs), targets)}
            return {"loss": F.cross_entropy(self.model(inputs), data_samples, label_smoothing=self.label_smoothing)}
        logits = self.model(inputs)
        if mode == "tensor":
            return logits
        if mode == "predict":
            scores = logits.float().softmax(dim=-1)
            labels = data_samples if data_samples is not None else [None] * len(scores)
            return [{"pred_score": s, "gt_label": None if y is None else int(y)} for s, y in zip(scores, labels)]
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")


def _convert_classifier_checkpoint(module: ZooClassifier, state_dict: Dict[str, Any], prefix: str,
                                   *args: Any) -> None:
    """Load-state-dict pre-hook: accept official/timm classification checkpoints.

    ``tools/test.py`` hands mmengine the whole file when it has no
    ``state_dict`` entry (official trainers store ``{'model': ..., 'optimizer':
    ..., 'config': ...}``), and official keys lack our ``model.`` prefix.
    Such input is unwrapped and converted with the family's
    ``checkpoint_filter_fn``; this module's own layout passes unchanged.
    """
    own = [k for k in state_dict if k.startswith(prefix)]
    if any(k.startswith(prefix + "model.") for k in own):
        return
    inner = state_dict.get(prefix + "model")
    if isinstance(inner, dict):
        sd = unwrap_state_dict(inner)
    else:
        sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}
    if not sd:
        return
    for k in own:
        del state_dict[k]
    filter_fn = find_checkpoint_filter_fn(module.model)
    if filter_fn is not None:
        sd = filter_fn(sd, module.model)
    state_dict.update({f"{prefix}model.{k}": v for k, v in sd.items()})


@DATASETS.register_module()
class ZooImageFolderDataset(BaseDataset):
    """ImageNet-style classification data with timm transforms.

    Args:
        data_root: dataset folder.
        data_prefix: sub-folder with the images, e.g. ``dict(img_path='train')``.
        ann_file: optional list file (relative to ``data_root``) with lines
            ``<relative image path> <label>``; without it, class ``i`` is the
            ``i``-th sub-folder of the image folder in sorted order.
        classes: class names (default: the sub-folder names, or ``str(label)``).
        transform: ``timm.data.create_transform`` arguments (``input_size``,
            ``is_training``, ``auto_augment``, ``re_prob``, ``interpolation``,
            ``crop_pct``, ``mean``, ``std``, ...).  RandAugment's posterize at 0 bits gives a black
            image (as with Pillow < 13) instead of Pillow 13's ``ValueError``.

    Items: ``dict(inputs=(3, H, W) float tensor, data_samples=int label)``
    (use ``collate_fn=dict(type='default_collate')``).
    """

    def __init__(self, data_root: str, data_prefix: Optional[dict] = None, ann_file: str = "",
                 classes: Optional[Sequence[str]] = None, transform: Optional[dict] = None,
                 test_mode: bool = False, lazy_init: bool = False, **kwargs: Any) -> None:
        self._classes = list(classes) if classes is not None else None
        self._transform = _with_zero_bit_posterize(
            create_transform(**(transform or dict(input_size=224, is_training=not test_mode))))
        super().__init__(ann_file=ann_file, data_root=data_root,
                         data_prefix=data_prefix or dict(img_path=""), test_mode=test_mode,
                         serialize_data=False, lazy_init=lazy_init, pipeline=[], **kwargs)

    def load_data_list(self) -> List[dict]:
        img_dir = self.data_prefix.get("img_path", self.data_root)
        items: List[dict] = []
        if self.ann_file:
            with open(self.ann_file) as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    parts = line.rsplit(maxsplit=1)
                    if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                        raise ValueError(f"{self.ann_file}:{n}: expected '<path> <label>', got {line!r}")
                    items.append(dict(img_path=os.path.join(img_dir, parts[0]), gt_label=int(parts[1])))
            if self._classes is None:
                self._classes = [str(i) for i in range(max(i["gt_label"] for i in items) + 1)]
        else:
            found = sorted(d for d in os.listdir(img_dir) if os.path.isdir(os.path.join(img_dir, d)))
            if not found:
                raise ValueError(f"no class sub-folders in {img_dir!r} (expected <root>/<class>/<image>)")
            if self._classes is None:
                self._classes = found
            elif sorted(self._classes) != found:
                raise ValueError(f"classes {self._classes} do not match the sub-folders of {img_dir}: {found}")
            for label, name in enumerate(self._classes):
                folder = os.path.join(img_dir, name)
                for fname in sorted(os.listdir(folder)):
                    if fname.lower().endswith(IMG_EXTENSIONS):
                        items.append(dict(img_path=os.path.join(folder, fname), gt_label=label))
        if not items:
            raise ValueError(f"no images found under {img_dir!r}")
        self._metainfo = dict(self._metainfo, classes=tuple(self._classes))
        return items

    def prepare_data(self, idx: int) -> Dict[str, Any]:
        info = self.get_data_info(idx)
        with Image.open(info["img_path"]) as img:
            image = img.convert("RGB")
        return dict(inputs=self._transform(image), data_samples=info["gt_label"])


@METRICS.register_module()
class ZooAccuracy(BaseMetric):
    """Top-k accuracy in percent, reported as ``accuracy/top{k}``."""

    default_prefix = "accuracy"

    def __init__(self, topk: Sequence[int] = (1, 5), collect_device: str = "cpu",
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not topk or any(k < 1 for k in topk):
            raise ValueError(f"topk must be positive integers, got {tuple(topk)}")
        self.topk = tuple(topk)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if sample["gt_label"] is None:
                raise ValueError("ZooAccuracy needs ground-truth labels")
            score = sample["pred_score"]
            k_max = min(max(self.topk), score.numel())
            top = score.topk(k_max).indices.tolist()
            self.results.append([sample["gt_label"] in top[:k] for k in self.topk])

    def compute_metrics(self, results: List[List[bool]]) -> Dict[str, float]:
        hits = torch.tensor(results, dtype=torch.float64)
        return {f"top{k}": float(hits[:, i].mean() * 100) for i, k in enumerate(self.topk)}
