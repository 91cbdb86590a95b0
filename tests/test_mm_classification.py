"""Classification with mmengine: ZooClassifier / ZooImageFolderDataset / ZooAccuracy through
tools/train.py and tools/test.py, on crops of real photos (cat / coins / galaxies)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image
import pytest
import timm
import torch

import vmamba_zoo.mm  # noqa: F401
from vmamba_zoo.mm import sample_data
from vmamba_zoo.mm.classification import ZooAccuracy, ZooClassifier, ZooImageFolderDataset

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


torchrun_train = _load(Path(__file__).with_name("torchrun_utils.py"), "vmamba_zoo_test_torchrun_utils").torchrun_train
train_tool = _load(ROOT / "tools" / "train.py", "vmamba_zoo_tools_train")
test_tool = _load(ROOT / "tools" / "test.py", "vmamba_zoo_tools_test")

CLS_CFG = """
_base_ = ['{base}']
data_root = '{data_root}/'
# Overfitting check: no Mixup/CutMix, RandAugment or erasing (those are unit-tested separately).
model = dict(model_name='test_vmamba', num_classes=3, drop_path_rate=0.0, mixup=None)
_transform_train = dict(input_size=64, is_training=True, auto_augment=None, color_jitter=None,
                        interpolation='bicubic', re_prob=0.0, scale=(0.8, 1.0))
_transform_test = dict(input_size=64, is_training=False, interpolation='bicubic', crop_pct=1.0)
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, pin_memory=False,
                        dataset=dict(data_root=data_root, data_prefix=dict(img_path='train'),
                                     transform=_transform_train))
val_dataloader = dict(batch_size=6, num_workers=0, persistent_workers=False, pin_memory=False,
                      dataset=dict(data_root=data_root, data_prefix=dict(img_path='val'),
                                   transform=_transform_test))
test_dataloader = val_dataloader
val_evaluator = dict(topk=(1, 2))
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3)]
train_cfg = dict(by_epoch=True, max_epochs={epochs}, val_interval={epochs})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, save_best=None))
custom_hooks = [dict(type='EMAHook', momentum=0.1, priority='ABOVE_NORMAL'), dict(type='RNGStateHook')]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
"""

# Exact resume: every random draw of the recipe is on (Mixup/CutMix, RandAugment,
# random erasing, random crops, drop path) at 32 x 32, 3 iterations per epoch.
RESUME_CFG = """
_base_ = ['{base}']
data_root = '{data_root}/'
model = dict(model_name='test_vmamba', num_classes=3, drop_path_rate=0.2,
             mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch'))
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, pin_memory=False,
                        dataset=dict(data_root=data_root, data_prefix=dict(img_path='train'),
                                     transform=dict(input_size=32, is_training=True, color_jitter=0.4,
                                                    auto_augment='rand-m9-mstd0.5-inc1', interpolation='bicubic',
                                                    re_prob=0.25, re_mode='pixel', re_count=1)))
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3)]
train_cfg = dict(by_epoch=True, max_epochs=4, val_interval=100)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=-1, save_best=None))
custom_hooks = [dict(type='EMAHook', momentum=0.1, priority='ABOVE_NORMAL'), dict(type='RNGStateHook')]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
"""


@pytest.fixture(scope="module")
def cls_config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cls")
    sample_data.make_image_folder_dataset(tmp / "data", size=64, per_class=8, split="train", seed=0)
    info = sample_data.make_image_folder_dataset(tmp / "data", size=64, per_class=2, split="val", seed=1)
    path = tmp / "cls_test_vmamba.py"
    path.write_text(CLS_CFG.format(base=ROOT / "configs/classification/vmamba-tiny-s1l8_8xb128-300e_in1k.py",
                                   epochs=3, **info))
    return path


def test_dataset_lists_folders_and_list_files(tmp_path):
    info = sample_data.make_image_folder_dataset(tmp_path, size=32, per_class=2)
    ds = ZooImageFolderDataset(data_root=str(tmp_path), data_prefix=dict(img_path="train"),
                               transform=dict(input_size=32, is_training=False, crop_pct=1.0))
    assert len(ds) == 6 and ds.metainfo["classes"] == info["classes"]
    item = ds[5]
    assert item["inputs"].shape == (3, 32, 32) and item["data_samples"] == 2
    (tmp_path / "list.txt").write_text("train/coins/0.jpg 1\ntrain/cat/1.jpg 0\n")
    ds2 = ZooImageFolderDataset(data_root=str(tmp_path), ann_file="list.txt",
                                transform=dict(input_size=32, is_training=False, crop_pct=1.0))
    assert [ds2.get_data_info(i)["gt_label"] for i in range(2)] == [1, 0]
    (tmp_path / "bad.txt").write_text("train/coins/0.jpg one\n")
    with pytest.raises(ValueError, match="expected '<path> <label>'"):
        ZooImageFolderDataset(data_root=str(tmp_path), ann_file="bad.txt")


def test_randaugment_posterize_keeps_zero_bits(tmp_path):
    """'inc1' RandAugment asks posterize for 0 bits at the top magnitude: a black image, as Pillow < 13 gave
    (Pillow 13 raises ValueError, which failed real training batches)."""
    info = sample_data.make_image_folder_dataset(tmp_path, size=32, per_class=1)
    ds = ZooImageFolderDataset(data_root=info["data_root"], data_prefix=dict(img_path=info["img_path"]),
                               transform=dict(input_size=32, is_training=True, auto_augment="rand-m9-mstd0.5-inc1"))
    ops = [op for step in ds._transform.transforms for op in getattr(step, "ops", ()) if op.name.startswith("Poster")]
    assert [op.name for op in ops] == ["PosterizeIncreasing"]
    op = ops[0]
    op.prob, op.magnitude_std = 1.0, 0
    img = Image.new("RGB", (8, 8), (200, 100, 50))
    op.magnitude = 10  # 4 - int(10 / 10 * 4) = 0 bits
    assert np.asarray(op(img)).max() == 0
    op.magnitude = 5  # 2 bits: 0b11000000 of each channel
    assert np.asarray(op(img))[0, 0].tolist() == [192, 64, 0]
    assert len(ds[0]["inputs"].shape) == 3


def test_accuracy_metric():
    metric = ZooAccuracy(topk=(1, 2))
    scores = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    metric.process(None, [dict(pred_score=s, gt_label=y) for s, y in zip(scores, [0, 1, 1])])
    out = metric.compute_metrics(metric.results)
    assert out["top1"] == pytest.approx(100 / 3) and out["top2"] == pytest.approx(100.0)


def test_classifier_mixup_loss_and_modes():
    torch.manual_seed(0)
    clf = ZooClassifier("test_vmamba", num_classes=3, mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0))
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1])
    loss = clf(x, y, mode="loss")["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert clf.model.head.fc.weight.grad is not None
    with pytest.raises(ValueError, match="even batch size"):
        clf(x[:3], y[:3], mode="loss")
    preds = clf(x, y, mode="predict")
    assert len(preds) == 4 and preds[1]["gt_label"] == 1
    torch.testing.assert_close(preds[0]["pred_score"].sum(), torch.tensor(1.0))
    assert clf(x, mode="tensor").shape == (4, 3)
    with pytest.raises(ValueError, match="mode"):
        clf(x, y, mode="bogus")


def test_classifier_loads_official_checkpoint_through_mmengine(tmp_path):
    """An official-layout ``{'model': ..., 'optimizer': ...}`` file (no ``state_dict``
    entry) loads into ZooClassifier with mmengine's runner loader (``tools/test.py`` path)."""
    from mmengine.runner.checkpoint import _load_checkpoint_to_model

    test_bb = _load(Path(__file__).with_name("test_mm_backbone.py"), "vmamba_zoo_test_mm_backbone")
    torch.manual_seed(3)
    src = timm.create_model("test_vmamba", num_classes=3)
    official = test_bb._official_vmamba_keys(src.state_dict())
    clf = ZooClassifier("test_vmamba", num_classes=3, mixup=None)
    _load_checkpoint_to_model(clf, {"model": official, "optimizer": {}, "epoch": 10}, strict=True)
    for k, v in src.state_dict().items():
        assert torch.equal(clf.model.state_dict()[k], v), k


def test_classification_trains_resumes_and_evaluates(cls_config, tmp_path):
    work = tmp_path / "work"
    no_val = ["val_cfg=None", "val_dataloader=None", "val_evaluator=None"]  # evaluation: tools/test.py below
    runner = train_tool.main([str(cls_config), "--work-dir", str(work), "--cfg-options", *no_val])
    losses = np.asarray(runner.message_hub.get_scalar("train/loss").data[0])
    assert len(losses) == 3 * 6 and np.isfinite(losses).all()
    assert losses[-6:].mean() < 0.9 * losses[:6].mean(), losses.round(3)
    assert (work / "epoch_3.pth").is_file()
    runner2 = train_tool.main([str(cls_config), "--work-dir", str(work), "--resume",
                               "--cfg-options", "train_cfg.max_epochs=4", *no_val])
    assert runner2.epoch == 4 and (work / "epoch_4.pth").is_file()
    # Overfitting: tools/test.py top-1 on the training crops and on unseen crops of the same
    # photos rises from chance (an untrained model predicts one class: 33 %) to >= 2x chance.
    torch.manual_seed(0)
    untrained = tmp_path / "untrained.pth"
    torch.save({"state_dict": ZooClassifier("test_vmamba", num_classes=3, mixup=None).state_dict()}, untrained)
    chance = 100.0 / 3
    results = {}
    for name, ckpt in (("untrained", untrained), ("trained", work / "epoch_4.pth")):
        for split in ("train", "val"):
            results[name, split] = test_tool.main(
                [str(cls_config), str(ckpt), "--work-dir", str(tmp_path / f"test_{name}_{split}"),
                 "--cfg-options", f"test_dataloader.dataset.data_prefix.img_path={split}"])
    assert set(results["trained", "val"]) == {"accuracy/top1", "accuracy/top2"}
    top1 = {k: v["accuracy/top1"] for k, v in results.items()}
    for split in ("train", "val"):
        assert top1["trained", split] >= 2 * chance - 1e-6, top1
        assert top1["trained", split] > top1["untrained", split], top1


@pytest.fixture(scope="module")
def resume_config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cls_resume")
    info = sample_data.make_image_folder_dataset(tmp / "data", size=32, per_class=4, split="train", seed=0)
    path = tmp / "cls_resume_test_vmamba.py"
    path.write_text(RESUME_CFG.format(base=ROOT / "configs/classification/vmamba-tiny-s1l8_8xb128-300e_in1k.py",
                                      **info))
    return path


def _load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k}"


def test_resume_is_exact(resume_config, tmp_path):
    """Stopping after epoch 2 of 4 and resuming ends with bit-identical weights, EMA weights
    and optimizer state; without the stored generator states the runs diverge."""
    full, part, blind = tmp_path / "full", tmp_path / "part", tmp_path / "blind"
    train_tool.main([str(resume_config), "--work-dir", str(full)])
    train_tool.main([str(resume_config), "--work-dir", str(part), "--cfg-options", "train_cfg.max_epochs=2"])
    ckpt2 = _load_ckpt(part / "epoch_2.pth")
    assert ckpt2["rng_states"]["world_size"] == 1 and len(ckpt2["rng_states"]["states"]) == 1
    # The same checkpoint minus the generator states, as mmengine alone would write it.
    blind.mkdir()
    del ckpt2["rng_states"]
    torch.save(ckpt2, blind / "epoch_2.pth")
    runner = train_tool.main([str(resume_config), "--work-dir", str(part), "--resume"])
    assert runner.epoch == 4 and runner.iter == 12
    train_tool.main([str(resume_config), "--work-dir", str(blind), "--resume", str(blind / "epoch_2.pth")])

    ref, resumed, diverged = (_load_ckpt(d / "epoch_4.pth") for d in (full, part, blind))
    assert ref["meta"]["iter"] == resumed["meta"]["iter"] == 12
    # state_dict holds the EMA weights (EMAHook swaps them in), ema_state_dict the trained ones.
    _assert_same_tensors(ref["state_dict"], resumed["state_dict"], "EMA weights")
    _assert_same_tensors(ref["ema_state_dict"], resumed["ema_state_dict"], "weights")
    for s_ref, s_res in zip(ref["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        _assert_same_tensors(s_ref, s_res, "optimizer state")
    assert any(not torch.equal(v, diverged["state_dict"][k]) for k, v in ref["state_dict"].items())


def test_rng_state_round_trip_and_resume_rules(tmp_path):
    """States survive torch.load(weights_only=True) and reproduce every generator; they are
    restored only when resuming with the same world size, before training starts."""
    import random
    from types import SimpleNamespace

    from vmamba_zoo.mm.hooks import RNGStateHook, get_rng_state, set_rng_state

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    torch.save(get_rng_state(), tmp_path / "rng.pth")
    first = draws()
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True))
    assert draws() == first
    with pytest.raises(ValueError, match="lacks"):
        set_rng_state({"torch": torch.get_rng_state()})

    hook = RNGStateHook()
    ckpt = {}
    hook.before_save_checkpoint(SimpleNamespace(iter=3), ckpt)
    assert ckpt["rng_states"]["world_size"] == 1
    expected = draws()
    for resume, saved in ((False, ckpt["rng_states"]), (True, dict(ckpt["rng_states"], world_size=2)), (True, None)):
        hook.after_load_checkpoint(SimpleNamespace(_resume=resume), {"rng_states": saved} if saved else {})
        hook.before_train(None)
        assert draws() != expected  # load_from, another world size, no stored states: seeds kept
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), ckpt)
    hook.before_train(None)
    assert draws() == expected


def test_ddp_two_processes_on_cpu_and_exact_resume(resume_config, tmp_path):
    """torchrun, 2 gloo processes, per-rank seeds: 12 images -> 6 per rank -> 2 iterations
    (batches of 4 and 2) per epoch.  Then: 1 epoch + --resume to 2 == 2 epochs, bit for bit,
    which needs each rank's own generator states back."""
    part, full = tmp_path / "part", tmp_path / "full"
    per_rank_seed = "randomness.diff_rank_seed=True"
    torchrun_train(resume_config, part, "--cfg-options", "train_cfg.max_epochs=1", per_rank_seed)
    ckpt = _load_ckpt(part / "epoch_1.pth")
    assert ckpt["meta"]["iter"] == 2
    rng = ckpt["rng_states"]
    assert rng["world_size"] == 2 and len(rng["states"]) == 2
    assert not torch.equal(rng["states"][0]["torch"], rng["states"][1]["torch"])  # per-rank seeds
    assert "ema_state_dict" in ckpt and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
                                            if v.is_floating_point())
    scalars = [json.loads(line) for line in next(part.glob("*/vis_data/scalars.json")).read_text().splitlines()]
    losses = [rec["loss"] for rec in scalars if "loss" in rec]
    assert len(losses) == 2 and np.isfinite(losses).all(), scalars

    log = torchrun_train(resume_config, part, "--resume", "--cfg-options", "train_cfg.max_epochs=2", per_rank_seed)
    assert "restored the generator states" in log, log[-4000:]
    torchrun_train(resume_config, full, "--cfg-options", "train_cfg.max_epochs=2", per_rank_seed)
    ref, resumed = _load_ckpt(full / "epoch_2.pth"), _load_ckpt(part / "epoch_2.pth")
    _assert_same_tensors(ref["state_dict"], resumed["state_dict"], "EMA weights")
    _assert_same_tensors(ref["ema_state_dict"], resumed["ema_state_dict"], "weights")
