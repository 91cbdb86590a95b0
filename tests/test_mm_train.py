"""Real (tiny) OpenMMLab runs through tools/train.py and tools/test.py on CPU.

Mask R-CNN and UperNet with the ``test_vmamba`` backbone overfit a handful of
real photos (coins / galaxies segmented from scikit-image's sample images,
written as a COCO instance set and an ADE20K-format semantic set): losses
must be finite and fall, the checkpoint must resume, and evaluation must
produce COCO bbox/segm AP and mIoU.  A 2-process gloo DDP run goes through
torchrun.  The test configs inherit the repository's real configs and only
shrink the model/data/schedule.
"""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from vmamba_zoo.mm import sample_data

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


torchrun_train = _load(Path(__file__).with_name("torchrun_utils.py"), "vmamba_zoo_test_torchrun_utils").torchrun_train
train_tool = _load(ROOT / "tools" / "train.py", "vmamba_zoo_tools_train")
test_tool = _load(ROOT / "tools" / "test.py", "vmamba_zoo_tools_test")

DET_CFG = """
_base_ = ['{base}']
data_root = '{data_root}/'
metainfo = dict(classes={classes!r})
model = dict(
    backbone=dict(model_name='test_vmamba', drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=128, num_classes=2),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=2)),
    train_cfg=dict(rpn=dict(sampler=dict(num=64)), rpn_proposal=dict(nms_pre=500, max_per_img=200),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=30)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
_data = dict(data_root=data_root, ann_file='{ann_file}', data_prefix=dict(img='{img_prefix}'), metainfo=metainfo)
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dict(_data, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(_data, test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + '{ann_file}', metric=['bbox', 'segm'])
test_evaluator = val_evaluator
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={iters}, val_interval={iters})
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(by_epoch=False, interval={iters}))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
"""

SEG_CFG = """
_base_ = ['{base}']
data_root = '{data_root}/'
metainfo = dict(classes={classes!r})
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    backbone=dict(model_name='test_vmamba', drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(in_channels=[16, 32, 64, 128], channels=64, num_classes=3, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=64, channels=32, num_classes=3, norm_cfg=norm_cfg))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='PackSegInputs'),
]
test_pipeline = train_pipeline
_data = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
             seg_map_suffix='.png', reduce_zero_label=True,
             data_prefix=dict(img_path='{img_path}', seg_map_path='{seg_map_path}'))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dict(_data, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(_data, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters={iters}, val_interval={iters})
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(by_epoch=False, interval={iters}))
randomness = dict(seed=0)
"""


def _losses(runner) -> np.ndarray:
    return np.asarray(runner.message_hub.get_scalar("train/loss").data[0], dtype=np.float64)


# Training runs skip validation (evaluation is tested once, through tools/test.py).
NO_VAL = ["val_cfg=None", "val_dataloader=None", "val_evaluator=None"]
ITERS = 20


def _check_overfit(losses: np.ndarray, iters: int) -> None:
    assert len(losses) == iters and np.isfinite(losses).all(), losses
    first, last = losses[:4].mean(), losses[-4:].mean()
    assert last < 0.85 * first, f"loss did not fall: first 4 {first:.3f}, last 4 {last:.3f} ({losses.round(3)})"


@pytest.fixture(scope="module")
def coco_config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("det")
    info = sample_data.make_coco_dataset(tmp / "coco", size=128)
    assert info["num_images"] == 6 and info["num_instances"] >= 30
    path = tmp / "mask_rcnn_test_vmamba.py"
    path.write_text(DET_CFG.format(base=ROOT / "configs/detection/mask-rcnn_vmamba-tiny-s1l8_fpn_1x_coco.py",
                                   iters=ITERS, **info))
    return path


def test_mask_rcnn_trains_resumes_and_evaluates(coco_config, tmp_path):
    work = tmp_path / "work"
    runner = train_tool.main([str(coco_config), "--work-dir", str(work), "--cfg-options", *NO_VAL])
    losses = _losses(runner)
    _check_overfit(losses, ITERS)
    assert (work / f"iter_{ITERS}.pth").is_file()

    # Resume from the latest checkpoint (weights_only load of mmengine's objects) for 4 more iterations.
    runner2 = train_tool.main([str(coco_config), "--work-dir", str(work), "--resume", "--cfg-options",
                               f"train_cfg.max_iters={ITERS + 4}", *NO_VAL])
    assert runner2.iter == ITERS + 4 and (work / f"iter_{ITERS + 4}.pth").is_file()
    history = _losses(runner2)  # the message hub is resumed too: old + 4 new losses
    assert len(history) == ITERS + 4 and np.allclose(history[:ITERS], losses)
    resumed = history[ITERS:]
    assert np.isfinite(resumed).all()
    assert resumed.mean() < losses[:4].mean(), "resumed run does not start from the trained weights"

    metrics = test_tool.main([str(coco_config), str(work / f"iter_{ITERS + 4}.pth"), "--work-dir",
                              str(tmp_path / "test"), "--out", str(tmp_path / "preds.pkl")])
    for key in ("coco/bbox_mAP", "coco/bbox_mAP_50", "coco/segm_mAP", "coco/segm_mAP_50"):
        assert key in metrics and math.isfinite(metrics[key]) and 0.0 <= metrics[key] <= 1.0, (key, metrics)
    # After 24 iterations from scratch the detector finds some of the coins (AP50 ~0.1-0.2).
    assert metrics["coco/bbox_mAP_50"] > 0.0 and metrics["coco/segm_mAP_50"] > 0.0, metrics
    assert (tmp_path / "preds.pkl").is_file()


def test_upernet_trains_resumes_and_evaluates(tmp_path):
    info = sample_data.make_ade20k_dataset(tmp_path / "ade", size=128)
    cfg = tmp_path / "upernet_test_vmamba.py"
    cfg.write_text(SEG_CFG.format(
        base=ROOT / "configs/segmentation/upernet_vmamba-tiny-s1l8_8xb2-160k_ade20k-512x512.py", iters=ITERS, **info))
    work = tmp_path / "work"
    runner = train_tool.main([str(cfg), "--work-dir", str(work), "--cfg-options", *NO_VAL])
    losses = _losses(runner)
    _check_overfit(losses, ITERS)

    runner2 = train_tool.main([str(cfg), "--work-dir", str(work), "--resume", str(work / f"iter_{ITERS}.pth"),
                               "--cfg-options", f"train_cfg.max_iters={ITERS + 3}", *NO_VAL])
    assert runner2.iter == ITERS + 3 and (work / f"iter_{ITERS + 3}.pth").is_file()
    history = _losses(runner2)
    assert len(history) == ITERS + 3 and np.allclose(history[:ITERS], losses)
    assert np.isfinite(history[ITERS:]).all() and history[ITERS:].mean() < losses[:4].mean()

    metrics = test_tool.main([str(cfg), str(work / f"iter_{ITERS + 3}.pth"), "--work-dir", str(tmp_path / "test")])
    assert "mIoU" in metrics and 0.0 <= metrics["mIoU"] <= 100.0, metrics
    # "background" covers most pixels (its IoU alone gives mIoU ~32); > 40 needs coins/galaxies found.
    assert metrics["aAcc"] > 50.0 and metrics["mIoU"] > 40.0, metrics


def test_ddp_two_processes_on_cpu(coco_config, tmp_path):
    work = tmp_path / "work"
    log = torchrun_train(coco_config, work, "--cfg-options", "train_cfg.max_iters=3", "train_cfg.val_interval=3",
                         "default_hooks.checkpoint.interval=3")
    assert (work / "iter_3.pth").is_file()
    assert "coco/bbox_mAP" in log  # distributed evaluation gathered the results of both ranks


def test_train_tool_options(coco_config, tmp_path):
    cfg = train_tool.build_config(train_tool.parse_args(
        [str(coco_config), "--amp", "--resume", "--work-dir", str(tmp_path), "--cfg-options", "train_cfg.max_iters=7"]))
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.loss_scale == "dynamic"
    assert cfg.resume is True and cfg.load_from is None and cfg.work_dir == str(tmp_path)
    assert cfg.train_cfg.max_iters == 7
    assert "dtype" not in cfg.optim_wrapper  # mmengine's default (float16)
    cfg = train_tool.build_config(train_tool.parse_args([str(coco_config), "--amp", "--amp-dtype", "bfloat16"]))
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.dtype == "bfloat16"
    with pytest.raises(SystemExit):
        train_tool.parse_args([str(coco_config), "--amp-dtype", "bfloat16"])  # needs --amp
    cfg = train_tool.build_config(train_tool.parse_args([str(coco_config), "--resume", "ckpt.pth"]))
    assert cfg.resume is True and cfg.load_from == "ckpt.pth"
    assert cfg.work_dir.endswith("mask_rcnn_test_vmamba")
    with pytest.raises(SystemExit):
        test_tool.parse_args([str(coco_config), "ckpt.pth", "--out", "preds.json"])
