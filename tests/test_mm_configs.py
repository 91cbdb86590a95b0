"""Every detection / segmentation / classification config builds and runs.

For each config: it parses (including the mmdet/mmseg base configs it inherits),
imports the zoo through ``custom_imports``, its backbone model is registered
with timm (a config whose backbone is missing FAILS), the full model builds at
its real size, the neck/head input channels match the backbone's output
channels, the optimizer gives no weight decay to norms and SSM parameters
(``A_logs``, ``Ds``), and one inference step runs on a small input.
Configs that differ only in schedule/pipeline (1x vs 3x) share one built model.
"""
from pathlib import Path

import pytest
import timm
import torch

import vmamba_zoo.mm  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIRS = ("detection", "segmentation", "classification")
CONFIGS = sorted(p for d in CONFIG_DIRS for p in (ROOT / "configs" / d).rglob("*.py") if "_base_" not in p.parts)
_BUILT = {}  # model-config text -> built model


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    for family in ("vmamba-tiny-s1l8", "vmamba-small-s2l15", "vmamba-base-s2l15", "spatial-mamba-tiny",
                   "spatial-mamba-small", "spatial-mamba-base", "efficient-vmamba-tiny", "efficient-vmamba-base"):
        assert f"mask-rcnn_{family}_fpn_1x_coco.py" in names
        assert f"mask-rcnn_{family}_fpn_ms-crop-3x_coco.py" in names
        assert f"upernet_{family}_8xb2-160k_ade20k-512x512.py" in names
    assert "retinanet_efficient-vmamba-tiny_fpn_1x_coco.py" in names


def _expected_in_channels(cfg):
    """(component, channels it expects from the backbone) pairs of a config."""
    model = cfg.model
    pairs = []
    if "neck" in model and "in_channels" in model.neck:
        pairs.append(("neck", list(model.neck.in_channels)))
    if "decode_head" in model:
        pairs.append(("decode_head", list(model.decode_head.in_channels)))
    if "auxiliary_head" in model:
        head = model.auxiliary_head
        pairs.append(("auxiliary_head", [head.in_channels], head.get("in_index", 2)))
    return pairs


def _inference_batch(task: str, size: int = 64):
    img = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    meta = dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0), img_id=0)
    if task == "mmdet":
        from mmdet.structures import DetDataSample
        return dict(inputs=[img], data_samples=[DetDataSample(metainfo=meta)])
    if task == "mmseg":
        from mmseg.structures import SegDataSample
        return dict(inputs=[img], data_samples=[SegDataSample(metainfo=meta)])
    return dict(inputs=[img], data_samples=None)


def _decay_by_name(model, optim):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["weight_decay"] for g in optim.optimizer.param_groups for p in g["params"]}


def _ssm_params(timm_model):
    """SSM parameters of a timm model: what it excludes from weight decay beyond biases /
    1-D tensors (e.g. ``A_logs``), plus the skip parameters ``D``/``Ds``."""
    params = dict(timm_model.named_parameters())
    no_wd = timm_model.no_weight_decay() if hasattr(timm_model, "no_weight_decay") else set()
    return {n for n in no_wd if n in params and params[n].ndim >= 2} | {n for n in params if n.endswith((".Ds", ".D"))}


def _build(cfg):
    """Build ``cfg.model`` in its toolbox's scope (cached: 1x/3x configs share a model) and
    run one inference step on a 64x64 image."""
    from mmengine.registry import MODELS, DefaultScope

    key = repr(cfg.model.to_dict())
    if key not in _BUILT:
        with DefaultScope.overwrite_default_scope(cfg.get("default_scope")):
            torch.manual_seed(0)
            model = MODELS.build(cfg.model).eval()
            batch = _inference_batch(cfg.get("default_scope"))
            if cfg.get("default_scope") is None:  # classification: float inputs, normalised by the dataset
                batch = dict(inputs=torch.randn(1, 3, 64, 64), data_samples=torch.tensor([0]))
            with torch.no_grad():
                outs = model.test_step(batch)
        assert len(outs) == 1
        _BUILT.clear()  # keep one model alive at a time
        _BUILT[key] = model
    return _BUILT[key]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_builds_and_runs(path):
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope

    cfg = Config.fromfile(str(path))
    assert "vmamba_zoo.mm" in cfg.custom_imports["imports"]
    classification = cfg.model.type == "ZooClassifier"
    if classification:
        name = cfg.model.model_name
    else:
        backbone_cfg = cfg.model.backbone
        assert backbone_cfg.type == "VMambaZooBackbone", "zoo configs use the zoo backbone"
        name = backbone_cfg.model_name
        init = backbone_cfg.get("init_cfg")
        assert init and init["type"] == "Pretrained" and init["checkpoint"], "configs start from ImageNet weights"
    assert timm.is_model(name), (f"{path.name}: model {name!r} is not registered with timm "
                                 f"(is its model family implemented?)")

    model = _build(cfg)
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope")):
        optim = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = _decay_by_name(model, optim)
    base_wd = cfg.optim_wrapper.optimizer.weight_decay
    timm_model = model.model if classification else model.backbone.model
    prefix = "model." if classification else "backbone.model."
    ssm = {prefix + n for n in _ssm_params(timm_model)}
    assert ssm, f"{name}: no SSM parameters found"
    norms = {n for n in decay if n.startswith(prefix) and "norm" in n}
    assert norms, f"{name} has no norm parameters?"
    for n in sorted(ssm | norms):
        assert decay[n] == 0.0, f"{path.name}: {n} gets weight decay {decay[n]}"
    weight = next(n for n, p in model.named_parameters() if n.startswith(prefix) and p.ndim > 1
                  and "norm" not in n and n not in ssm)
    assert decay[weight] == base_wd, (weight, decay[weight])

    if classification:
        assert model.model.num_classes == cfg.model.num_classes
        return
    backbone = model.backbone
    for pair in _expected_in_channels(cfg):
        comp, channels = pair[0], pair[1]
        if comp == "auxiliary_head":
            want = [backbone.out_channels[backbone.out_indices.index(pair[2])]]
        else:
            want = backbone.out_channels
        assert channels == want, f"{path.name}: {comp}.in_channels {channels} != backbone channels {want}"
