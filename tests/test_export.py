"""ONNX export through the pure-PyTorch selective scan, checked against PyTorch with onnxruntime."""
from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import timm
import torch

import vmamba_zoo  # noqa: F401
import vmamba_zoo_kernels
from vmamba_zoo import cli
from vmamba_zoo.onnx_export import scan_backend

TINY = "test_vmamba"


def test_export_cli_matches_pytorch(capsys, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(TINY).eval()
    weights = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), weights)
    path = tmp_path / "tiny.onnx"
    rc = cli.main(["export", TINY, "--onnx", str(path), "--img-size", "32", "--weights", str(weights)])
    out, _ = capsys.readouterr()
    assert rc == 0 and "onnxruntime matches PyTorch" in out and "scan backend ref" in out

    proto = onnx.load(str(path))
    assert proto.graph.input[0].name == "image"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch
    # an independent check: another batch size, against the eager model with the same weights
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32)
    (got,) = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-3, atol=1e-4)

    rc = cli.main(["export", TINY, "--img-size", "32"])
    _, err = capsys.readouterr()
    assert rc == 2 and "--onnx" in err and "Traceback" not in err


def test_export_chunked_cpu_scan(tmp_path):
    """The chunked scan exports too (cumprod written as Exp(CumSum(Log)))."""
    from vmamba_zoo.onnx_export import export_onnx

    torch.manual_seed(0)
    model = timm.create_model(TINY).eval()
    report = export_onnx(model, tmp_path / "cpu.onnx", img_size=32, backend="cpu")
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4
    ops = {n.op_type for n in onnx.load(str(tmp_path / "cpu.onnx")).graph.node}
    assert "CumSum" in ops
    with pytest.raises(ValueError, match="cannot be traced"):
        export_onnx(model, tmp_path / "x.onnx", img_size=32, backend="triton")


def test_scan_backend_is_forced_and_restored():
    from vmamba_zoo.layers import ss2d

    original = vmamba_zoo_kernels.selective_scan
    assert ss2d.selective_scan is original
    with scan_backend("ref"):
        assert ss2d.selective_scan.func is original and ss2d.selective_scan.keywords == {"backend": "ref"}
    assert ss2d.selective_scan is original
    with pytest.raises(RuntimeError, match="boom"), scan_backend("ref"):
        raise RuntimeError("boom")
    assert ss2d.selective_scan is original
    with pytest.raises(ValueError, match="unknown scan backend"), scan_backend("cuda-magic"):
        pass
