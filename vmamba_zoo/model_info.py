"""Facts about registered models: zoo membership, family, scan pattern, parameters, FLOPs.

FLOPs follow the convention of the visual-Mamba papers (fvcore's, used by VMamba's
``flops()``): one multiply-accumulate counts as one FLOP, for matmuls and convolutions;
element-wise ops, norms and activations are not counted.  They are measured with
:class:`torch.utils.flop_counter.FlopCounterMode` (which counts 2 per MAC, halved here).
The selective scan is a custom kernel the counter cannot see inside; every call of
:func:`vmamba_zoo_kernels.selective_scan` is replaced by the estimate VMamba uses
(after Albert Gu, state-spaces/mamba#110)::

    9 * B * D * L * N   (+ B * D * L with a D skip term, + B * D * L with a z gate)

with u of shape (B, D, L) and A of shape (D, N).  Whatever the counter saw inside the
call (e.g. the einsums of the pure-PyTorch reference) is discarded, so the result does
not depend on the scan backend.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = [
    "ModelFacts",
    "zoo_models",
    "family_of",
    "scan_patterns_of",
    "count_params",
    "count_flops",
    "selective_scan_flops",
    "model_facts",
    "load_model_table",
    "save_model_table",
    "rows_for",
    "MODEL_TABLE_PATH",
]

_logger = logging.getLogger(__name__)

#: Committed cache of :func:`model_facts` for the zoo's models (FLOPs take seconds each).
MODEL_TABLE_PATH = Path(__file__).resolve().parent / "assets" / "model_table.json"


def zoo_models(include_test: bool = True) -> List[str]:
    """Names of the timm models registered by vmamba_zoo (sorted).

    Args:
        include_test: keep the tiny ``test_*`` variants meant for unit tests.
    """
    import timm
    from timm.models import model_entrypoint

    import vmamba_zoo  # noqa: F401  (registration)

    names = [m for m in timm.list_models() if model_entrypoint(m).__module__.startswith("vmamba_zoo.")]
    return sorted(n for n in names if include_test or not n.startswith("test_"))


def family_of(model_name: str) -> str:
    """Model family = the module that registered it (``vmamba``, ``convnext``, ...)."""
    from timm.models import model_entrypoint, split_model_name_tag

    return model_entrypoint(split_model_name_tag(model_name)[0]).__module__.rsplit(".", 1)[-1]


def scan_patterns_of(model: nn.Module) -> List[str]:
    """Names of the scan patterns used in a model (empty for models without SS2D-style scans)."""
    from .scan import ScanPattern

    return sorted({m.name or type(m).__name__ for m in model.modules() if isinstance(m, ScanPattern)})


def count_params(model: nn.Module) -> int:
    """Number of parameters (works on meta-device models)."""
    return sum(p.numel() for p in model.parameters())


def selective_scan_flops(batch: int, dim: int, length: int, n_state: int, with_d: bool, with_z: bool) -> int:
    """VMamba's estimate for one selective scan: 9·B·D·L·N (+B·D·L for D, +B·D·L for z)."""
    flops = 9 * batch * dim * length * n_state
    flops += batch * dim * length * (int(with_d) + int(with_z))
    return flops


@dataclasses.dataclass
class _ScanTally:
    calls: int = 0
    estimate: int = 0
    discarded: int = 0  # counter flops seen inside scan calls (2 per MAC)


def _scan_code_objects() -> Tuple[Any, ...]:
    try:
        from vmamba_zoo_kernels.selective_scan import selective_scan
    except ImportError:
        return ()
    return (selective_scan.__code__,)


def count_flops(model: nn.Module, inputs: torch.Tensor) -> Dict[str, float]:
    """Count the FLOPs (MAC convention) of one forward pass.

    Args:
        model: the model, in eval mode (real or meta device).
        inputs: (B, C, H, W) input on the model's device.

    Returns:
        ``{"flops": total, "scan_flops": selective-scan estimate, "scan_calls": n}``
        for the whole batch.
    """
    from torch.utils.flop_counter import FlopCounterMode

    codes = _scan_code_objects()
    tally = _ScanTally()
    counter = FlopCounterMode(display=False)
    stack: List[int] = []

    def profiler(frame, event, arg):  # sys.setprofile hook: sees Python calls/returns only
        if frame.f_code not in codes:
            return
        if event == "call":
            if not stack:  # outermost scan call
                loc = frame.f_locals
                u, a = loc["u"], loc["A"]
                batch, dim, length = u.shape
                tally.calls += 1
                tally.estimate += selective_scan_flops(batch, dim, length, a.shape[1],
                                                       loc.get("D") is not None, loc.get("z") is not None)
            stack.append(counter.get_total_flops())
        elif event == "return" and stack:
            start = stack.pop()
            if not stack:
                tally.discarded += counter.get_total_flops() - start

    old = sys.getprofile()
    with torch.no_grad(), counter:
        sys.setprofile(profiler)
        try:
            model(inputs)
        finally:
            sys.setprofile(old)
    macs = (counter.get_total_flops() - tally.discarded) / 2
    return {"flops": macs + tally.estimate, "scan_flops": float(tally.estimate), "scan_calls": tally.calls}


@dataclasses.dataclass
class ModelFacts:
    """One row of the model table (FLOPs at ``input_size``, batch 1)."""

    model: str
    family: str
    scan: str
    params: int
    gflops: Optional[float]
    scan_gflops: Optional[float]
    input_size: Tuple[int, int, int]

    def to_json(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        return d


def _build(model_name: str, device: str) -> nn.Module:
    import timm

    with torch.device(device):
        model = timm.create_model(model_name, pretrained=False)
    return model.eval()


def model_facts(model_name: str, image_size: int = 224, flops: bool = True) -> ModelFacts:
    """Compute a model's table row; FLOPs at ``image_size``² (batch 1).

    The model is built on the meta device (no memory, no real compute); a model that
    cannot run on meta is built and run on CPU instead.
    """
    facts: Optional[ModelFacts] = None
    for device in ("meta", "cpu"):
        try:
            model = _build(model_name, device)
            x = torch.zeros(1, 3, image_size, image_size, device=device)
            counted = count_flops(model, x) if flops else None
        except (NotImplementedError, RuntimeError) as e:
            if device == "cpu":
                raise
            _logger.info("%s cannot run on the meta device (%s); counting on CPU", model_name, e)
            continue
        scans = scan_patterns_of(model)
        facts = ModelFacts(
            model=model_name, family=family_of(model_name), scan=",".join(scans) or "-",
            params=count_params(model),
            gflops=round(counted["flops"] / 1e9, 3) if counted else None,
            scan_gflops=round(counted["scan_flops"] / 1e9, 3) if counted else None,
            input_size=(3, image_size, image_size))
        break
    assert facts is not None
    return facts


def load_model_table(path: Path = MODEL_TABLE_PATH) -> Dict[str, Dict[str, Any]]:
    """The committed model table (``{}`` if the file does not exist)."""
    if not Path(path).is_file():
        return {}
    data = json.loads(Path(path).read_text())
    return dict(data.get("models", {}))


def save_model_table(rows: Iterable[ModelFacts], path: Path = MODEL_TABLE_PATH,
                     keep: Optional[Dict[str, Dict[str, Any]]] = None) -> None:
    """Write the model table JSON (sorted, stable formatting so diffs stay small)."""
    models = dict(keep or {})
    models.update({r.model: r.to_json() for r in rows})
    about = ("Parameters and FLOPs (MAC convention, selective scan by 9*B*D*L*N, see vmamba_zoo/model_info.py) "
             "at batch 1. Regenerate: vmamba-zoo list --refresh")
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(models[k])}" for k in sorted(models))
    Path(path).write_text(f'{{\n "about": {json.dumps(about)},\n "models": {{\n{body}\n }}\n}}\n')


def rows_for(names: Sequence[str], refresh: bool = False, path: Path = MODEL_TABLE_PATH) -> List[Dict[str, Any]]:
    """Table rows for ``names``: from the committed cache, computed when missing or ``refresh``."""
    table = {} if refresh else load_model_table(path)
    out = []
    for name in names:
        row = table.get(name)
        if row is None:
            row = model_facts(name).to_json()
        out.append(row)
    return out
