"""VMambaZooBackbone: registry resolution, outputs, freezing, checkpointing, pretrained loading;
weights_only-safe loading of mmengine and official checkpoints."""
import re
import sys
import types

import numpy as np
import pytest
import timm
import torch
from torch import nn

import vmamba_zoo.mm  # noqa: F401
from vmamba_zoo.mm import VMambaZooBackbone
from vmamba_zoo.mm.checkpoint import UnpickledObject, load_checkpoint_file, mmengine_safe_globals

TINY = "test_vmamba"
CHANNELS = [16, 32, 64, 128]


def _backbone(**kw) -> VMambaZooBackbone:
    torch.manual_seed(0)
    return VMambaZooBackbone(TINY, **kw)


def _official_vmamba_keys(sd):
    """Zoo VMamba keys -> official VMamba layout (vmamba.md section 5): ``patch_embed.{0,2,5,7}``,
    ``layers.i.blocks``, ``layers.i.downsample.{1,3}`` (downsample at the end of stage i),
    ``classifier.{norm,head}``."""
    stem = {"conv1": "0", "norm1": "2", "conv2": "5", "norm2": "7"}
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^stem\.(\w+)\.", lambda m: f"patch_embed.{stem[m.group(1)]}.", k)
        k = re.sub(r"^stages\.(\d+)\.downsample\.(conv|norm)\.",
                   lambda m: f"layers.{int(m.group(1)) - 1}.downsample.{'1' if m.group(2) == 'conv' else '3'}.", k)
        k = re.sub(r"^stages\.(\d+)\.blocks\.", r"layers.\1.blocks.", k)
        k = re.sub(r"^norm\.", "classifier.norm.", k)
        k = re.sub(r"^head\.fc\.", "classifier.head.", k)
        out[k] = v
    return out


def test_registered_in_root_registry_and_found_from_mmdet_and_mmseg():
    from mmdet.registry import MODELS as DET
    from mmengine.registry import MODELS as ROOT
    from mmseg.registry import MODELS as SEG

    assert ROOT.get("VMambaZooBackbone") is VMambaZooBackbone
    for registry in (DET, SEG):
        net = registry.build(dict(type="VMambaZooBackbone", model_name=TINY, out_indices=(1, 3)))
        assert isinstance(net, VMambaZooBackbone)


def test_outputs_nchw_with_outnorms():
    net = _backbone().eval()
    assert net.out_channels == CHANNELS and net.strides == [4, 8, 16, 32]
    outs = net(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, c, 64 // s, 64 // s) for c, s in zip(CHANNELS, [4, 8, 16, 32])]
    keys = net.state_dict().keys()
    assert {f"outnorm{i}.weight" for i in range(4)} <= set(keys)
    assert not any(k.startswith("model.head") for k in keys)
    # LayerNorm over channels: each output pixel is normalised (weight 1, bias 0 at init).
    mean = outs[0].mean(dim=1)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)


def test_out_indices_subset_prunes_later_stages():
    net = _backbone(out_indices=(1, 2))
    outs = net(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 64]
    assert not any(k.startswith("model.stages.3") for k in net.state_dict())
    assert {k.split(".")[0] for k in net.state_dict() if k.startswith("outnorm")} == {"outnorm1", "outnorm2"}


@pytest.mark.parametrize("bad", [dict(out_indices=(0, 4)), dict(out_indices=(2, 1)), dict(out_indices=()),
                                 dict(out_indices=(0, 1), frozen_stages=3)])
def test_bad_arguments_raise(bad):
    with pytest.raises(ValueError):
        VMambaZooBackbone(TINY, **bad)


def test_unknown_model_and_unknown_kwarg_raise():
    with pytest.raises(ValueError, match="unknown timm model"):
        VMambaZooBackbone("no_such_model_xyz")
    with pytest.raises(TypeError):
        VMambaZooBackbone(TINY, no_such_kwarg=1)


def test_frozen_stages_freeze_stem_and_stages_and_stay_eval():
    net = _backbone(frozen_stages=2)
    net.train()
    for name, p in net.named_parameters():
        frozen = name.startswith(("model.stem.", "model.stages.0.", "model.stages.1.", "outnorm0.", "outnorm1."))
        assert p.requires_grad != frozen, name
    assert not net.model.stages[1].training and not net.model.stem.training
    assert net.model.stages[2].training
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    # a randomly weighted loss: the plain sum of a LayerNorm-ed output (weight 1, bias 0) has a zero gradient,
    # up to rounding, with respect to everything before the norm
    g = torch.Generator().manual_seed(0)
    sum((o * torch.randn(o.shape, generator=g)).sum() for o in net(torch.randn(2, 3, 64, 64))).backward()
    opt.step()
    after = net.state_dict()
    assert torch.equal(before["model.stem.conv1.weight"], after["model.stem.conv1.weight"])
    assert not torch.equal(before["model.stages.3.blocks.0.mlp.fc1.weight"], after["model.stages.3.blocks.0.mlp.fc1.weight"])


def test_norm_eval_keeps_batchnorm_in_eval():
    net = VMambaZooBackbone("resnet18", out_indices=(1, 2, 3), norm_eval=True)
    net.train()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert net.training


def test_with_cp_matches_plain_forward_and_grads():
    x = torch.randn(1, 3, 32, 32)
    ref, cp = _backbone(), _backbone(with_cp=True)
    cp.load_state_dict(ref.state_dict())
    grads, calls = [], []
    for net in (ref, cp):
        net.train()
        count = [0]
        net.model.stages[1].blocks[0].register_forward_pre_hook(lambda *a: count.__setitem__(0, count[0] + 1))
        outs = net(x)
        sum((o ** 2).mean() for o in outs).backward()
        grads.append(net.model.stem.conv1.weight.grad.clone())
        calls.append(count[0])
    assert calls == [1, 2], f"block forward calls without/with checkpointing: {calls} (recompute expected)"
    for a, b in zip(ref.eval()(x), cp.eval()(x)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def _classifier_state_dict():
    torch.manual_seed(1)
    return timm.create_model(TINY).state_dict()


def test_pretrained_official_classification_checkpoint(tmp_path):
    """An official-layout ``{'model': ..., 'config': <yacs CfgNode>}`` training checkpoint
    loads (foreign pickled objects become inert placeholders) through the family's
    checkpoint_filter_fn; classifier keys are reported as unexpected."""
    cls_sd = _classifier_state_dict()
    official = _official_vmamba_keys(cls_sd)
    assert "layers.0.downsample.1.weight" in official and "patch_embed.0.weight" in official
    mod = types.ModuleType("fake_yacs_config")
    exec("class CfgNode(dict):\n    pass\n", mod.__dict__)
    sys.modules["fake_yacs_config"] = mod
    try:
        cfg_obj = mod.CfgNode(MODEL=dict(TYPE="vssm"))
        torch.save({"model": official, "config": cfg_obj, "epoch": 3, "max_accuracy": np.float64(82.6)},
                   tmp_path / "cls.pth")
    finally:
        del sys.modules["fake_yacs_config"]  # the class is not importable at load time

    raw = load_checkpoint_file(str(tmp_path / "cls.pth"))
    assert isinstance(raw["config"], UnpickledObject) and raw["config"]["MODEL"] == {"TYPE": "vssm"}

    net = _backbone(init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "cls.pth")))
    net.init_weights()
    sd = net.state_dict()
    for k, v in cls_sd.items():
        if not k.startswith(("head.", "norm.")):
            torch.testing.assert_close(sd[f"model.{k}"], v, msg=k)
    missing, unexpected = net.load_pretrained(str(tmp_path / "cls.pth"))
    assert set(missing) == {f"outnorm{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    assert set(unexpected) == {"model.head.fc.weight", "model.head.fc.bias", "model.norm.weight", "model.norm.bias"}


def test_pretrained_raises_when_nothing_matches(tmp_path):
    torch.save({"model": {"foo.weight": torch.zeros(3)}}, tmp_path / "bad.pth")
    net = _backbone(init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "bad.pth")))
    with pytest.raises(RuntimeError, match="none of its"):
        net.init_weights()


def test_pretrained_raises_on_shape_mismatch(tmp_path):
    torch.save({"model": timm.create_model(TINY, dims=24).state_dict()}, tmp_path / "other.pth")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        _backbone().load_pretrained(str(tmp_path / "other.pth"))


def test_pretrained_from_downstream_checkpoint_uses_backbone_prefix(tmp_path):
    src = _backbone()
    for p in src.parameters():
        nn.init.normal_(p)
    sd = {f"backbone.{k}": v for k, v in src.state_dict().items()}
    sd["neck.lateral.weight"] = torch.zeros(2)
    torch.save({"state_dict": sd, "meta": {"epoch": 1}}, tmp_path / "det.pth")
    net = _backbone(init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "det.pth")))
    net.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_official_downstream_checkpoint_converted_on_load():
    """Official Mask R-CNN/UperNet checkpoints store ``backbone.<official key>`` and
    ``backbone.outnorm{i}``; loading the whole detector converts them (pre-hook)."""
    from mmengine.runner.checkpoint import load_state_dict

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = _backbone()
            self.neck = nn.Linear(2, 2)

    src = _backbone()
    for p in src.parameters():
        nn.init.normal_(p)
    own = src.state_dict()
    official = _official_vmamba_keys({k[len("model."):]: v for k, v in own.items() if k.startswith("model.")})
    official.update({k: v for k, v in own.items() if k.startswith("outnorm")})
    sd = {f"backbone.{k}": v for k, v in official.items()}
    sd.update({"neck.weight": torch.ones(2, 2), "neck.bias": torch.ones(2)})
    for loader in (lambda m, s: m.load_state_dict(s, strict=True), lambda m, s: load_state_dict(m, s, strict=True)):
        det = Detector()
        loader(det, dict(sd))
        for k, v in own.items():
            assert torch.equal(det.backbone.state_dict()[k], v), k
        assert torch.equal(det.neck.weight, torch.ones(2, 2))


def test_mmengine_checkpoint_objects_load_with_weights_only(tmp_path):
    from mmengine.logging import HistoryBuffer

    buf = HistoryBuffer()
    buf.update(1.5)
    ckpt = {"message_hub": {"log_scalars": {"loss": buf}}, "x": np.arange(3.0), "s": np.float32(2.0),
            "state_dict": {"w": torch.ones(2)}}
    torch.save(ckpt, tmp_path / "mm.pth")
    with pytest.raises(Exception, match="HistoryBuffer"):
        torch.load(tmp_path / "mm.pth", weights_only=True)
    with torch.serialization.safe_globals(mmengine_safe_globals()):
        out = torch.load(tmp_path / "mm.pth", weights_only=True)
    assert out["message_hub"]["log_scalars"]["loss"].mean() == 1.5
    assert np.array_equal(out["x"], np.arange(3.0)) and out["s"] == 2.0


def test_guarded_getattr_refuses_other_attributes(tmp_path):
    from mmengine.logging import HistoryBuffer

    class Evil:
        def __reduce__(self):
            return getattr, (HistoryBuffer, "update")

    torch.save({"evil": Evil()}, tmp_path / "evil.pth")
    with torch.serialization.safe_globals(mmengine_safe_globals()):
        with pytest.raises(Exception, match="refusing getattr"):
            torch.load(tmp_path / "evil.pth", weights_only=True)
