"""Wave-VMamba: the wavelet-scan twin of VMamba v2 (no official weights)."""
import json
import math
from pathlib import Path

import pytest
import timm
import torch

import vmamba_zoo  # noqa: F401
from vmamba_zoo_kernels.dispatch import triton_available

TWINS = {"wave_vmamba_tiny": "vmamba_tiny_s1l8", "wave_vmamba_small": "vmamba_small_s1l20",
         "test_wave_vmamba": "test_vmamba"}
RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "wave_vmamba_patch_run.json"


@pytest.mark.parametrize("name", sorted(TWINS))
def test_same_parameters_as_cross_scan_twin(name):
    with torch.device("meta"):
        wave = timm.create_model(name)
        cross = timm.create_model(TWINS[name])
    assert {k: v.shape for k, v in wave.state_dict().items()} == {k: v.shape for k, v in cross.state_dict().items()}
    patterns = {m.scan_pattern.name for m in wave.modules() if hasattr(m, "scan_pattern")}
    assert patterns == {"wavelet"}


def test_twin_weights_load_and_change_only_the_scan():
    torch.manual_seed(0)
    cross = timm.create_model("test_vmamba").eval()
    wave = timm.create_model("test_wave_vmamba").eval()
    wave.load_state_dict(cross.state_dict(), strict=True)
    x = torch.randn(2, 3, 36, 44)  # odd maps (9x11 ... 2x2) are padded to multiples of 4 inside the scan
    with torch.no_grad():
        a, b = wave.forward_features(x), cross.forward_features(x)
        assert a.shape == b.shape and torch.isfinite(a).all()
        op_w, op_c = wave.stages[0].blocks[0].op, cross.stages[0].blocks[0].op
        for op in (op_w, op_c):  # make the scan term dominate the (pattern-independent) D * u skip
            op.Ds.zero_()
            op.dt_projs_bias.add_(3.0)
        u = torch.randn(1, op_w.d_inner, 9, 11)
        y_w, y_c = op_w.forward_core(u), op_c.forward_core(u)
        assert (y_w - y_c).norm() > 0.1 * y_c.norm()


def test_no_pretrained_weights():
    assert timm.list_pretrained("wave_vmamba*") == []
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("wave_vmamba_tiny", pretrained=True)


def test_forward_backward_odd_input():
    model = timm.create_model("test_wave_vmamba", num_classes=3)
    out = model(torch.randn(2, 3, 40, 52))
    assert out.shape == (2, 3)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_committed_learning_run_is_complete():
    report = json.loads(RUN.read_text())
    steps = report["settings"]["steps"]
    assert set(report["summary"]) == set(report["runs"]) == {"v2", "no_mlp", "no_mlp_scan_init"}
    logs = [(config, seed, name, log) for config, runs in report["runs"].items()
            for seed, run in runs.items() for name, log in run.items()]
    assert {name for *_, name, _ in logs} == {"test_vmamba", "test_wave_vmamba"}
    for config, seed, name, log in logs:
        assert len(log["train_loss"]) == steps, (config, seed, name)
        assert all(math.isfinite(v) for v in log["train_loss"] + log["val_loss"])
        first, last = sum(log["train_loss"][:20]) / 20, sum(log["train_loss"][-20:]) / 20
        assert last < first, f"{config}/{name} seed {seed}: training loss did not go down ({first:.3f} -> {last:.3f})"


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_fused_core_in_the_model_equals_the_unfused_core(monkeypatch):
    """The wavelet routes through the fused core's Triton kernel (the CUDA path; Triton's interpreter on
    the CPU), inside the test model with its channels-last trunk, against the materialising path."""
    import vmamba_zoo.layers.fused_core as fused_core
    from vmamba_zoo.layers import SS2D

    torch.manual_seed(0)
    model = timm.create_model("test_wave_vmamba", num_classes=5).eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    x = torch.randn(2, 3, 40, 48, device=device)
    monkeypatch.setattr(fused_core, "resolve_backend", lambda backend, dev: "triton")
    calls = []
    real = fused_core.ss2d_core_fused
    monkeypatch.setattr("vmamba_zoo.layers.ss2d.ss2d_core_fused", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        fused = model(x)
        assert calls, "the fused core did not run"
        for module in model.modules():
            if isinstance(module, SS2D):
                module.use_fused_kernel = False
        unfused = model(x)
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-4)
