"""The ``vmamba-zoo`` command line: commands, user errors, committed model table, demo."""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

import vmamba_zoo  # noqa: F401
from vmamba_zoo import cli
from vmamba_zoo.model_info import MODEL_TABLE_PATH, count_params, load_model_table, model_facts, zoo_models

TINY = "test_vmamba"
PHOTO = str(cli.DEMO_IMAGE)


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc, err, *needles):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmamba-zoo: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_entry_points():
    eps = [ep for ep in importlib.metadata.entry_points(group="console_scripts") if ep.name == "vmamba-zoo"]
    assert eps and eps[0].value == "vmamba_zoo.cli:main"
    proc = subprocess.run([sys.executable, "-m", "vmamba_zoo.cli", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "predict" in proc.stdout and "export" in proc.stdout


def test_list(capsys, offline_cache):
    rc, out, _ = run(capsys, "list", "--test")
    assert rc == 0
    assert TINY in out and "vmamba_tiny_s1l8" in out and "cross" in out
    row = next(line for line in out.splitlines() if line.startswith("vmamba_tiny_s1l8 "))
    assert "30.2M" in row and "4.88" in row and row.split()[-1] == "download"  # not cached in the temp cache
    rc, out, _ = run(capsys, "list", "--json")
    rows = json.loads(out)
    assert {r["model"] for r in rows} == set(zoo_models(include_test=False))


def test_committed_model_table_is_up_to_date():
    """assets/model_table.json must cover every zoo model with the right parameter count."""
    table = load_model_table()
    missing = sorted(set(zoo_models()) - set(table))
    assert not missing, f"regenerate {MODEL_TABLE_PATH.name} (vmamba-zoo list --refresh): missing {missing}"
    for name in zoo_models():
        with torch.device("meta"):
            model = timm.create_model(name)
        assert table[name]["params"] == count_params(model), f"{name}: stale entry, run vmamba-zoo list --refresh"
    fresh = model_facts(TINY)
    assert table[TINY]["gflops"] == fresh.gflops and table[TINY]["scan"] == fresh.scan


def test_info_and_close_matches(capsys):
    rc, out, _ = run(capsys, "info", "vmamba_tiny_s1l8")
    assert rc == 0 and "vssm1_tiny_0230s_ckpt_epoch_264.pth" in out and "mit" in out and "82.6" in out
    rc, _, err = run(capsys, "info", "vmamba_tiny")
    assert_user_error(rc, err, "unknown model 'vmamba_tiny'", "did you mean", "vmamba_tiny_s1l8")
    rc, _, err = run(capsys, "info", "vmamba_tiny_s1l8.in22k")
    assert_user_error(rc, err, "no pretrained tag 'in22k'", "in1k")


def test_predict_random_init_json(capsys):
    rc, out, err = run(capsys, "predict", TINY, PHOTO, PHOTO, "--random-init", "--json", "--device", "cpu")
    assert rc == 0 and "meaningless" in err
    data = json.loads(out)
    assert len(data["results"]) == 2
    preds = data["results"][0]["predictions"]
    assert len(preds) == 5 and all(a["prob"] >= b["prob"] for a, b in zip(preds, preds[1:]))
    names = cli.load_class_names()
    assert len(names) == 1000 and names[281].startswith("tabby")
    assert all(p["label"] == names[p["index"]] for p in preds)


def test_predict_with_local_weights_matches_the_model(capsys, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(TINY).eval()
    path = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict(), "epoch": 1}, path)  # official training-checkpoint layout
    rc, out, _ = run(capsys, "predict", TINY, PHOTO, "--weights", str(path), "--json", "--device", "cpu")
    assert rc == 0
    from timm.data import create_transform, resolve_data_config

    x = create_transform(**resolve_data_config(model=model))(Image.open(PHOTO).convert("RGB"))[None]
    with torch.no_grad():
        expected = model(x).softmax(-1)[0].topk(5).indices.tolist()
    assert [p["index"] for p in json.loads(out)["results"][0]["predictions"]] == expected


def test_user_errors_are_one_line(capsys, tmp_path, offline_cache):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image")
    rc, _, err = run(capsys, "predict", TINY, str(garbage), "--random-init")
    assert_user_error(rc, err, "cannot read image", "garbage.jpg")
    rc, _, err = run(capsys, "predict", TINY, str(tmp_path / "missing.png"), "--random-init")
    assert_user_error(rc, err, "missing.png", "no such file")
    rc, _, err = run(capsys, "predict", TINY, PHOTO)
    assert_user_error(rc, err, "no pretrained weights", "--random-init")
    rc, _, err = run(capsys, "predict", "vmamba_tiny_s1l8", PHOTO)  # offline, empty cache
    assert_user_error(rc, err, "vssm1_tiny_0230s_ckpt_epoch_264.pth", str(offline_cache))
    rc, _, err = run(capsys, "predict", TINY, PHOTO, "--weights", str(tmp_path / "nope.pth"))
    assert_user_error(rc, err, "nope.pth", "does not exist")
    rc, _, err = run(capsys, "bench", TINY, "--img-size", "8", "--device", "cpu")
    assert_user_error(rc, err, "at least 32")
    rc, _, err = run(capsys, "bench", TINY, "--device", "gpu0")
    assert_user_error(rc, err, "'gpu0' is not a device")
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("test_mambaout").state_dict(), other)
    rc, _, err = run(capsys, "predict", TINY, PHOTO, "--weights", str(other))
    assert_user_error(rc, err, "other.pth does not fit test_vmamba")
    rc, _, err = run(capsys, "erf", "resnet18", "--img-size", "0")
    assert_user_error(rc, err, "--img-size must be positive")


def test_bench_json(capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    rc, out, _ = run(capsys, "bench", TINY, "--device", "cpu", "--batch-size", "1", "--img-size", "32", "--warmup", "0",
                     "--iters", "1", "--modes", "infer_fp32", "train_bf16", "--out", str(out_json), "--no-progress")
    assert rc == 0 and TINY in out
    report = json.loads(out_json.read_text())
    assert report["environment"]["torch"] == torch.__version__ and "triton" in report["environment"]
    assert report["environment"]["cpu_scan"] == "native, OpenMP"  # what CPU inference ran, recorded
    assert [r["mode"] for r in report["results"]] == ["infer_fp32", "train_bf16"]
    assert all(r["img_per_s"] > 0 and r["error"] is None for r in report["results"])
    # the time to issue a step's work: on the CPU the step itself, so within its latency (one iteration)
    assert all(0 < r["host_ms_median"] <= r["latency_ms_median"] for r in report["results"])


def _load_tool(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_models_tool_cpu_smoke(capsys, tmp_path):
    out_json = tmp_path / "side_by_side.json"
    rc = _load_tool("bench_models").main([TINY, "test_mambaout", "--device", "cpu", "--batch-size", "1",
                                          "--img-size", "32", "--warmup", "0", "--iters", "1", "--modes", "infer_bf16",
                                          "--out", str(out_json), "--no-progress"])
    out, _ = capsys.readouterr()
    assert rc == 0 and "test_mambaout" in out and TINY in out
    report = json.loads(out_json.read_text())
    assert [r["model"] for r in report["results"]] == [TINY, "test_mambaout"]
    assert report["settings"]["batch_size"] == 1 and report["environment"]["device"] == "cpu"


def test_bench_isolation_default_and_flags(capsys, tmp_path):
    """Several models on CUDA run in one fresh process each (host-bound models measured late in a shared
    process come out slower); one model, the CPU, or --in-process stay in this process; --isolate forces it."""
    from vmamba_zoo.benchmark import isolate_by_default

    assert isolate_by_default(["a", "b"], "cuda") and isolate_by_default(["a"], "cpu", repeats=2)
    assert not isolate_by_default(["a"], "cuda") and not isolate_by_default(["a", "b"], "cpu")
    assert not isolate_by_default(["a", "b"], "cuda", isolate=False) and isolate_by_default(["a"], "cpu", isolate=True)
    out_json = tmp_path / "isolated.json"
    rc = _load_tool("bench_models").main([TINY, "--device", "cpu", "--batch-size", "1", "--img-size", "32",
                                          "--warmup", "0", "--iters", "1", "--modes", "infer_fp32", "--isolate",
                                          "--out", str(out_json), "--no-progress"])
    out, _ = capsys.readouterr()
    assert rc == 0 and "one fresh process per model" in out
    report = json.loads(out_json.read_text())
    assert report["environment"]["processes"] == 1 and report["results"][0]["img_per_s"] > 0
    with pytest.raises(SystemExit):
        _load_tool("bench_models").main([TINY, "--device", "cpu", "--in-process", "--repeats", "2"])
    assert "drop --in-process" in capsys.readouterr().err


def test_bench_models_tool_repeats_in_fresh_processes(capsys, tmp_path):
    out_json = tmp_path / "repeated.json"
    rc = _load_tool("bench_models").main([TINY, "--device", "cpu", "--batch-size", "1", "--img-size", "32",
                                          "--warmup", "0", "--iters", "1", "--modes", "infer_fp32", "--repeats", "2",
                                          "--out", str(out_json), "--no-progress"])
    out, _ = capsys.readouterr()
    assert rc == 0 and "of 2 processes per model" in out
    report = json.loads(out_json.read_text())
    assert report["settings"]["repeats"] == 2 and report["environment"]["processes"] == 2
    (result,) = report["results"]
    assert result["model"] == TINY and len(result["img_per_s_samples"]) == 2
    assert result["img_per_s"] == round(sum(result["img_per_s_samples"]) / 2, 2)  # the median of two


def test_aggregate_reports_median_samples_and_errors():
    from vmamba_zoo.benchmark import aggregate_reports, format_table

    def report(img_per_s, peak, error=None, batch_size=4, host_ms=0.5):
        result = dict(model="m", mode="train_bf16", batch_size=batch_size, img_size=32, params=1,
                      img_per_s=img_per_s, latency_ms_median=1.0 if img_per_s else None,
                      latency_ms_p90=2.0 if img_per_s else None, peak_mem_gib=peak, error=error,
                      img_per_s_samples=None, host_ms_median=host_ms if img_per_s else None)
        return {"environment": {"date": "d", "device": "cpu", "device_name": "cpu", "torch": "t", "triton": None},
                "results": [result],
                "settings": dict(batch_size=batch_size, img_size=32, modes=["train_bf16"])}

    merged = aggregate_reports([report(10.0, 1.0, host_ms=0.9), report(30.0, 3.0, host_ms=0.3),
                                report(20.0, 2.0, host_ms=0.4)])
    (r,) = merged["results"]
    assert r["img_per_s"] == 20.0 and r["img_per_s_samples"] == [10.0, 30.0, 20.0] and r["peak_mem_gib"] == 3.0
    assert r["host_ms_samples"] == [0.9, 0.3, 0.4] and r["host_ms_median"] == 0.4  # per process, same order
    older = report(10.0, 1.0)
    del older["results"][0]["host_ms_median"]  # a report written before the field existed
    assert aggregate_reports([older, report(20.0, 2.0)])["results"][0]["host_ms_samples"] is None
    assert merged["settings"]["repeats"] == 3 and r["error"] is None
    failed = aggregate_reports([report(10.0, 1.0), report(None, None, error="out of memory: x")])
    assert failed["results"][0]["error"].startswith("out of memory") and failed["results"][0]["img_per_s"] == 10.0
    assert "10.0 +failed" in format_table(failed)
    with pytest.raises(ValueError, match="different settings"):
        aggregate_reports([report(10.0, 1.0), report(10.0, 1.0, batch_size=8)])


def test_erf_png(capsys, tmp_path):
    out_png = tmp_path / "erf.png"
    rc, out, _ = run(capsys, "erf", TINY, "--img-size", "32", "--samples", "1", "--out", str(out_png), "--device", "cpu")
    assert rc == 0 and "of the contribution" in out
    with Image.open(out_png) as img:
        assert img.format == "PNG" and img.width >= 448


def test_erf_is_local_for_a_local_model():
    """Two 3x3 convs: the centre output depends on a 5x5 input window only."""
    from vmamba_zoo.erf import effective_receptive_field, erf_summary

    class TwoConvs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
            torch.nn.init.constant_(self.b.bias, 10.0)  # keep relu(F_center) active

        def forward_features(self, x):
            return self.b(self.a(x))

    erf = effective_receptive_field(TwoConvs(), img_size=16, samples=2)
    nz = (erf > 0).nonzero()
    assert nz[0].min() == 6 and nz[0].max() == 10 and nz[1].min() == 6 and nz[1].max() == 10
    assert erf_summary(erf)[0.99] <= 36 / 256


def test_convert_roundtrip(capsys, tmp_path, monkeypatch):
    import types

    torch.manual_seed(1)
    sd = timm.create_model(TINY).state_dict()
    cfg_mod = types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    cfg_mod.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", types.ModuleType("yacs"))
    monkeypatch.setitem(sys.modules, "yacs.config", cfg_mod)
    src = tmp_path / "official.pth"
    torch.save({"model": sd, "config": CfgNode(MODEL=CfgNode(NAME="x")), "epoch": 3}, src)
    monkeypatch.delitem(sys.modules, "yacs.config")
    rc = _load_tool("convert_checkpoint").main([str(src), str(tmp_path / "tiny"), "--model", TINY])
    out, _ = capsys.readouterr()
    assert rc == 0 and "pretrained_cfg_overlay" in out
    dst = tmp_path / "tiny.safetensors"
    model = timm.create_model(TINY, pretrained=True, pretrained_cfg_overlay=dict(file=str(dst)))
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    rc, _, err = run(capsys, "convert", str(src), str(tmp_path / "x"), "--model", "vmamba_tiny_s1l8")
    assert_user_error(rc, err, "does not fit vmamba_tiny_s1l8")


def test_demo_offline(capsys, tmp_path, offline_cache):
    rc, out, _ = run(capsys, "demo", "--out", str(tmp_path / "demo"), "--model", TINY)
    assert rc == 0
    assert "[2/3] model table" in out and "vmamba_tiny_s1l8" in out
    assert f"[3/3] classification: {TINY}" in out and "random weights" in out
    assert "[1/3] restoration: wavelet_mambair_dn25_skimage" in out
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["psnr_restored"] > metrics["psnr_noisy"] + 5  # card: 20.25 -> 30.87 dB on this photo
    for name in ("clean", "noisy", "restored"):
        with Image.open(tmp_path / "demo" / f"{name}.png") as img:
            assert img.size == (451, 300)


def test_model_cards_are_up_to_date():
    """model_cards/ must equal what tools/make_model_cards.py generates now."""
    root = Path(__file__).resolve().parents[1]
    tool = _load_tool("make_model_cards")
    files = tool.generate()
    assert len(files) == len(zoo_models(include_test=False)) + 1
    stale = sorted(p.name for p, text in files.items() if not p.is_file() or p.read_text() != text)
    assert not stale, f"model cards out of date: {stale}; run python tools/make_model_cards.py"
    extra = sorted(p.name for p in (root / "model_cards").glob("*.md") if p not in files and tool.is_generated(p))
    assert not extra, f"cards of unregistered models: {extra}; run python tools/make_model_cards.py"
    import re

    for path, text in files.items():  # the usage snippets are valid Python
        for block in re.findall(r"```python\n(.*?)```", text, re.S):
            compile(block, str(path), "exec")
    card = files[root / "model_cards" / "vmamba_tiny_s1l8.md"]
    for needle in ("| parameters | 30.2 M", "82.6 top-1", "| mit |", "VMambaZooBackbone", "timm.create_model"):
        assert needle in card, needle
    measured = [r["environment"]["device_name"] for _, r in tool.load_benchmarks()
                if any(x["model"] == "vmamba_tiny_s1l8" for x in r["results"])]
    assert all(d in card for d in measured) and (bool(measured) != ("Not measured yet" in card))


def test_restore(capsys, tmp_path):
    from vmamba_zoo.models.restoration_nets import RESTORATION_NET_CONFIGS
    from vmamba_zoo.restoration import create_restoration_model, restore_image
    from vmamba_zoo.restoration.pretrained import save_shipped_weights

    torch.manual_seed(0)
    net = create_restoration_model("wavelet_mambair_tiny").eval()
    weights = tmp_path / "tiny_dn.safetensors"
    save_shipped_weights(net, RESTORATION_NET_CONFIGS["wavelet_mambair_tiny"], str(weights))
    photo = tmp_path / "crop.png"
    Image.open(PHOTO).convert("RGB").crop((100, 50, 164, 98)).save(photo)
    out_png = tmp_path / "out.png"
    rc, out, _ = run(capsys, "restore", "wavelet_mambair_tiny", str(photo), "--weights", str(weights),
                     "--out", str(out_png), "--device", "cpu")
    assert rc == 0 and "64x48" in out
    import numpy as np

    expected = restore_image(net, np.asarray(Image.open(photo)))
    assert np.array_equal(np.asarray(Image.open(out_png)), expected)

    rc, _, err = run(capsys, "restore", "wavelet_mamba_tiny", str(photo))
    assert_user_error(rc, err, "unknown restoration model", "wavelet_mambair_tiny")
    rc, _, err = run(capsys, "restore", "mambair_tiny", str(photo))
    assert_user_error(rc, err, "no shipped weights for mambair_tiny", "--weights")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (4, 4)).save(tiny)
    rc, _, err = run(capsys, "restore", "wavelet_mambair_tiny", str(tiny), "--weights", str(weights))
    assert_user_error(rc, err, "at least 8x8")
