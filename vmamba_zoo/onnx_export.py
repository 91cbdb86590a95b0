"""ONNX export of zoo models through a traceable (pure-PyTorch) selective-scan path.

The Triton kernel cannot be traced, so the export runs every
:func:`vmamba_zoo_kernels.selective_scan` call with a pure-PyTorch backend:

* ``"ref"`` (default): the reference scan.  The tracer unrolls its time loop, so the
  graph grows with H·W -- fine for small inputs, large at 224².
* ``"cpu"``: the chunked scan (about 2·sqrt(L) unrolled steps).  It uses
  ``torch.cumprod`` of the decays exp(Δ·A) > 0, which ONNX lacks; during the export it
  is written as ``Exp(CumSum(Log(x)))``, exact for positive inputs.  The exported file is checked with ``onnx.checker`` and its
onnxruntime output compared with PyTorch's on a fresh random input.

Uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), which
needs only ``onnx``; the dynamo exporter would also need ``onnxscript``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import sys
import warnings
from pathlib import Path
from typing import Iterator, Optional, Union

import torch
from torch import nn

__all__ = ["ExportReport", "scan_backend", "export_onnx", "check_onnx"]

_logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ExportReport:
    """Result of an export (and of its check, if run)."""

    path: str
    img_size: int
    opset: int
    scan_backend: str
    num_nodes: int
    file_mb: float
    max_abs_diff: Optional[float] = None
    checked_batch: Optional[int] = None


@contextlib.contextmanager
def _cumprod_as_log_cumsum(opset: int) -> Iterator[None]:
    """Export ``aten::cumprod`` as Exp(CumSum(Log(x))) inside the block (valid for x >= 0 only)."""
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic
    from torch.onnx.symbolic_helper import parse_args

    @parse_args("v", "i", "none")
    def cumprod(g, x, dim, dtype):
        axis = g.op("Constant", value_t=torch.tensor(dim, dtype=torch.int64))
        return g.op("Exp", g.op("CumSum", g.op("Log", x), axis))

    register_custom_op_symbolic("aten::cumprod", cumprod, opset)
    try:
        yield
    finally:
        unregister_custom_op_symbolic("aten::cumprod", opset)


@contextlib.contextmanager
def scan_backend(backend: str) -> Iterator[None]:
    """Run every zoo call of ``selective_scan`` with ``backend`` inside the block.

    The zoo's layers import ``selective_scan`` by name; this swaps that name, in the
    ``vmamba_zoo`` modules that hold it, for a wrapper that passes ``backend=``, and
    restores it on exit.  (Single-threaded use; not re-entrant across threads.)
    """
    from vmamba_zoo_kernels import BACKENDS, selective_scan

    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; choose from {BACKENDS}")
    forced = functools.partial(selective_scan, backend=backend)
    patched = []
    for name, module in list(sys.modules.items()):
        if name.startswith("vmamba_zoo.") and getattr(module, "selective_scan", None) is selective_scan:
            patched.append(module)
            module.selective_scan = forced
    try:
        yield
    finally:
        for module in patched:
            module.selective_scan = selective_scan


def export_onnx(
    model: nn.Module,
    path: Union[str, Path],
    *,
    img_size: int = 224,
    in_chans: int = 3,
    opset: int = 17,
    backend: str = "ref",
    dynamic_batch: bool = True,
    check: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-3,
) -> ExportReport:
    """Export ``model`` (eval mode, CPU, fp32) to ONNX and optionally verify it.

    Args:
        model: any timm/zoo classification model taking (B, in_chans, H, W).
        path: output ``.onnx`` file.
        img_size: H = W of the traced input.
        opset: ONNX opset.
        backend: selective-scan backend used while tracing: ``"ref"`` or ``"cpu"`` (see module docstring).
        dynamic_batch: export the batch dimension as dynamic.
        check: run ``onnx.checker`` and compare onnxruntime with PyTorch.
        rtol, atol: tolerance of that comparison.

    Raises:
        ValueError: bad arguments; AssertionError: onnxruntime disagrees with PyTorch.
    """
    import onnx

    if img_size < 1:
        raise ValueError(f"img_size must be positive, got {img_size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to("cpu", torch.float32)
    x = torch.randn(1, in_chans, img_size, img_size)
    axes = {"image": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    if backend not in ("ref", "cpu"):
        raise ValueError(f"backend {backend!r} cannot be traced to ONNX; use 'ref' or 'cpu'")
    cumprod = _cumprod_as_log_cumsum(opset) if backend == "cpu" else contextlib.nullcontext()
    with scan_backend(backend), cumprod, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["image"], output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    proto = onnx.load(str(path), load_external_data=False)
    report = ExportReport(path=str(path), img_size=img_size, opset=opset, scan_backend=backend,
                          num_nodes=len(proto.graph.node), file_mb=round(path.stat().st_size / 2**20, 3))
    if check:
        report.checked_batch = 2 if dynamic_batch else 1
        report.max_abs_diff = check_onnx(model, path, batch=report.checked_batch, img_size=img_size,
                                         in_chans=in_chans, rtol=rtol, atol=atol)
    return report


def check_onnx(model: nn.Module, path: Union[str, Path], *, batch: int = 1, img_size: int = 224, in_chans: int = 3,
               rtol: float = 1e-3, atol: float = 1e-3, seed: int = 0) -> float:
    """Compare onnxruntime (CPU) with PyTorch eager on a random input; return the max abs difference.

    Raises:
        AssertionError: the outputs differ beyond ``rtol``/``atol``.
    """
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_chans, img_size, img_size, generator=g)
    with torch.no_grad():
        expected = model.eval()(x).float().numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    diff = float(abs(got - expected).max())
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), rtol=rtol, atol=atol,
                               msg=lambda m: f"onnxruntime output differs from PyTorch: {m}")
    _logger.info("onnx check of %s: max abs diff %.3g", path, diff)
    return diff
