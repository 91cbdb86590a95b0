"""The DDP scaling study (vmamba_zoo.mm.scaling, tools/ddp_scaling.py) and its TrainRecordHook.

The end-to-end test runs the three runs with gloo on CPU: with a deterministic pipeline (no random
augmentation, drop path or Mixup) the 2-process run's global loss must equal, iteration by iteration, the
one-process run at the same total batch: the same images per global batch and averaged gradients.
"""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

from vmamba_zoo.mm.scaling import (RUNS, compare_losses, global_loss, prepare_config, read_record, run_shape,
                                   sample_data_options, throughput)

ROOT = Path(__file__).resolve().parents[1]
CLS_CONFIG = ROOT / "configs/classification/vmamba-tiny-s1l8_8xb128-300e_in1k.py"
DET_CONFIG = ROOT / "configs/detection/mask-rcnn_vmamba-tiny-s1l8_fpn_1x_coco.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("vmamba_zoo_tools_ddp_scaling", ROOT / "tools" / "ddp_scaling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _record(losses, images, times, data_times=None):
    """A TrainRecordHook file's content: ``losses``/``images`` per rank (lists per iteration)."""
    ranks = []
    for rank, (loss, imgs) in enumerate(zip(losses, images)):
        ranks.append(dict(rank=rank, wall_start=0.0, wall_end=1.0, iter=list(range(len(loss))), images=imgs,
                          time=list(times), data_time=list(data_times or [0.01] * len(times)), loss=loss, losses={}))
    return dict(world_size=len(ranks), ranks=ranks)


def test_compare_losses_tells_noise_from_a_shift():
    rng = np.random.default_rng(0)
    base = list(1 + 0.1 * rng.standard_normal(200))
    same = compare_losses(base, base, 50)
    assert same["max_rel_diff"] == 0 and same["max_abs_z"] == 0 and len(same["windows"]) == 4
    noise = compare_losses(list(1 + 0.1 * rng.standard_normal(200)), base, 50)
    assert noise["max_abs_z"] < 3 and noise["max_rel_diff"] < 0.05
    shifted = compare_losses([v * 1.1 for v in base], base, 50)
    assert shifted["max_abs_z"] > 3 and shifted["max_rel_diff"] == pytest.approx(0.1, abs=1e-4)
    assert compare_losses([2.0, 2.0, 1.0], [1.0, 1.0, 1.0], 2)["windows"][0]["z"] == math.inf  # no scatter
    assert len(compare_losses(base[:130], base[:130], 50)["windows"]) == 2  # the partial window is dropped
    with pytest.raises(ValueError, match="different lengths"):
        compare_losses(base, base[:-1], 50)
    with pytest.raises(ValueError, match="window"):
        compare_losses(base, base, 1)


def test_throughput_and_global_loss_of_a_record(tmp_path):
    # 2 ranks x 2 images, 6 iterations of 0.5 s after a slow first one
    record = _record(losses=[[4.0, 1.0, 1.0, 1.0, 1.0, 3.0], [2.0, 3.0, 3.0, 3.0, 3.0, 1.0]],
                     images=[[2] * 6, [2] * 6], times=[5.0, 0.5, 0.5, 0.5, 0.6, 0.5])
    speed = throughput(record, warmup=1)
    assert speed["images_per_iter"] == 4 and speed["iter_s_median"] == 0.5 and speed["iterations_timed"] == 5
    assert speed["img_per_s"] == 8.0 and speed["img_per_s_per_gpu"] == 4.0 and speed["iter_s_p90"] == 0.6
    assert global_loss(record) == [3.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    uneven = _record(losses=[[1.0], [4.0]], images=[[1], [3]], times=[1.0])  # weighted by images
    assert global_loss(uneven) == [3.25]
    with pytest.raises(ValueError, match="no iteration times"):
        throughput(record, warmup=6)
    unknown = _record(losses=[[1.0, 1.0]], images=[[2, None]], times=[1.0, 1.0])
    with pytest.raises(ValueError, match="batch sizes"):
        throughput(unknown, warmup=0)
    path = tmp_path / "train_record.json"
    path.write_text(json.dumps(dict(record, world_size=3)))
    with pytest.raises(ValueError, match="2 rank records for world size 3"):
        read_record(path)
    record["ranks"][1]["iter"] = record["ranks"][1]["iter"][:-1]
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="different"):
        read_record(path)


def test_run_shapes():
    assert [run_shape(name, 4, 8) for name in RUNS] == [(1, 8), (4, 8), (1, 32)]
    with pytest.raises(ValueError, match="unknown run"):
        run_shape("triple", 4, 8)


def test_prepare_config_sets_the_study_up(tmp_path):
    out = prepare_config(CLS_CONFIG, tmp_path / "run" / "config.py", batch_per_process=16, iters=40,
                         warmup=10, options={"model.model_name": "test_vmamba"}, amp_dtype="bfloat16")
    cfg = Config.fromfile(str(out))
    assert cfg.model.model_name == "test_vmamba" and cfg.train_dataloader.batch_size == 16
    assert cfg.train_dataloader.sampler.type == "InfiniteSampler" and cfg.train_dataloader.persistent_workers is False
    assert cfg.train_cfg.type == "IterBasedTrainLoop" and cfg.train_cfg.max_iters == 40
    assert cfg.val_cfg is None and cfg.val_dataloader is None and cfg.val_evaluator is None
    assert [s.type for s in cfg.param_scheduler] == ["LinearLR"] and cfg.param_scheduler[0].end == 10
    assert [h.type for h in cfg.custom_hooks].count("TrainRecordHook") == 1
    assert "EMAHook" in [h.type for h in cfg.custom_hooks]  # the recipe's own hooks stay
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.dtype == "bfloat16"
    assert cfg.default_hooks.checkpoint.interval == -1 and cfg.randomness.seed == 0
    with pytest.raises(ValueError, match="warmup"):
        prepare_config(CLS_CONFIG, tmp_path / "c.py", batch_per_process=1, iters=5, warmup=5)
    with pytest.raises(ValueError, match="batch_per_process"):
        prepare_config(CLS_CONFIG, tmp_path / "c.py", batch_per_process=0, iters=5, warmup=1)
    with pytest.raises(ValueError, match="AMP dtype"):
        prepare_config(CLS_CONFIG, tmp_path / "c.py", batch_per_process=1, iters=5, warmup=1,
                       amp_dtype="fp8")


def test_use_amp():
    from vmamba_zoo.mm.amp import use_amp

    cfg = Config(dict(optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="AdamW"))))
    use_amp(cfg)
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.loss_scale == "dynamic"
    assert "dtype" not in cfg.optim_wrapper
    kept = Config(dict(optim_wrapper=dict(type="AmpOptimWrapper", loss_scale=512.0)))
    use_amp(kept, "bfloat16")
    assert kept.optim_wrapper.loss_scale == 512.0 and kept.optim_wrapper.dtype == "bfloat16"
    with pytest.raises(ValueError, match="OptimWrapper"):
        use_amp(Config(dict(optim_wrapper=dict(type="ApexOptimWrapper"))))


def test_sample_data_options_per_task(tmp_path):
    cls = sample_data_options(Config.fromfile(str(CLS_CONFIG)), tmp_path / "cls", image_size=32, images_per_class=2)
    assert cls["model.num_classes"] == 3 and len(list((tmp_path / "cls" / "train").glob("*/*.jpg"))) == 6
    det = sample_data_options(Config.fromfile(str(DET_CONFIG)), tmp_path / "det", image_size=64, images_per_class=2)
    assert det["model.roi_head.bbox_head.num_classes"] == 2 and det["model.roi_head.mask_head.num_classes"] == 2
    assert det["train_dataloader.dataset.metainfo"] == dict(classes=("coin", "galaxy"))
    assert (tmp_path / "det" / det["train_dataloader.dataset.ann_file"]).is_file()
    seg = Config.fromfile(str(ROOT / "configs/segmentation/upernet_vmamba-tiny-s1l8_8xb2-160k_ade20k-512x512.py"))
    with pytest.raises(ValueError, match="supported are classification"):
        sample_data_options(seg, tmp_path / "seg", image_size=32, images_per_class=2)


def test_ddp_study_on_cpu_matches_one_process_at_the_same_total_batch(tmp_path):
    tool = _load_tool()
    out = tmp_path / "report.json"
    assert tool.main([str(CLS_CONFIG), "--gpus", "2", "--batch-per-gpu", "2", "--iters", "6", "--warmup", "2",
                      "--window", "3", "--sample-data", "--sample-size", "32", "--sample-per-class", "4",
                      "--work-dir", str(tmp_path / "study"), "--out", str(out), "--cfg-options",
                      "model.model_name=test_vmamba", "model.drop_path_rate=0.0", "model.mixup=None",
                      "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
                      "train_dataloader.pin_memory=False", "train_dataloader.dataset.transform.input_size=32",
                      "train_dataloader.dataset.transform.is_training=False",
                      "train_dataloader.dataset.transform.crop_pct=1.0"]) == 0
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert [(runs[k]["processes"], runs[k]["images_per_iter"]) for k in ("single", "ddp", "single_total")] == [
        (1, 2), (2, 4), (1, 4)]
    for run in runs.values():
        assert len(run["loss"]) == 6 and all(math.isfinite(v) for v in run["loss"])
        assert run["img_per_s"] > 0 and run["startup_s"] > 0 and run["exit_s"] >= 0
    # deterministic data: the DDP run is the one-process run at the same total batch, iteration by iteration
    np.testing.assert_allclose(runs["ddp"]["loss"], runs["single_total"]["loss"], rtol=1e-4)
    assert not np.allclose(runs["single"]["loss"], runs["single_total"]["loss"], rtol=1e-2)  # half the batch
    scaling = report["scaling"]
    assert scaling["loss_match"] and scaling["loss_ddp_vs_single_total"]["max_rel_diff"] < 1e-4
    assert scaling["efficiency"] == pytest.approx(runs["ddp"]["img_per_s"] / (2 * runs["single"]["img_per_s"]),
                                                  rel=1e-3)
    record = read_record(tmp_path / "study" / "ddp" / "train_record.json")
    assert record["world_size"] == 2 and [r["rank"] for r in record["ranks"]] == [0, 1]
    assert all(r["images"] == [2] * 6 and r["wall_end"] > r["wall_start"] for r in record["ranks"])
    assert all((tmp_path / "study" / "ddp" / name).is_file() for name in ("config.py", "output.log"))
    # --rescore: the comparison again from the saved report, nothing run
    rescored = tmp_path / "rescored.json"
    assert tool.main(["--rescore", str(out), "--out", str(rescored), "--window", "2", "--max-z", "0"]) == 0
    again = json.loads(rescored.read_text())
    assert again["runs"] == report["runs"] and again["settings"]["window"] == 2 and again["settings"]["max_z"] == 0
    assert len(again["scaling"]["loss_ddp_vs_single_total"]["windows"]) == 3 and again["scaling"]["loss_match"]
    with pytest.raises(SystemExit):
        tool.main(["--rescore", str(out)])  # needs --out
