"""VMamba family: official checkpoint conversion and loading, layouts, API details."""
import re
import sys
import types

import pytest
import timm
import torch

import vmamba_zoo  # noqa: F401  (registers the models)
from vmamba_zoo.models.vmamba import checkpoint_filter_fn

SMALL = dict(depths=(1, 1, 1, 1), dims=32)  # every variant's layer settings, fewer and narrower blocks


def _to_official(state_dict, legacy_v0=False, grouped_linear=False):
    """Rename our keys to the official checkpoint layout (classification/models/vmamba.py).

    legacy_v0: the earliest v0 names (patch_embed.proj/norm, ln_1, self_attention, norm, head).
    grouped_linear: the 2025 one-file vmamba.py layout (x_proj.weight, dt_projs.weight as 2-D).
    """
    stem_v2 = {"conv1": "0", "norm1": "2", "conv2": "5", "norm2": "7"}
    merging = any(".downsample.reduction." in k for k in state_dict)
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"stem\.(\w+)\.(.*)", key)
        if m:
            name = m.group(1)
            if legacy_v0:
                key = f"patch_embed.{name}.{m.group(2)}"
            else:
                key = f"patch_embed.{stem_v2.get(name, {'proj': '0', 'norm': '2'}.get(name))}.{m.group(2)}"
        m = re.match(r"stages\.(\d+)\.downsample\.(\w+)\.(.*)", key)
        if m:  # PatchMerging2D keeps its names (reduction, norm); conv downsampling is Sequential(.., 1: conv, .., 3: norm)
            sub = m.group(2) if merging else {"conv": "1", "norm": "3"}[m.group(2)]
            key = f"layers.{int(m.group(1)) - 1}.downsample.{sub}.{m.group(3)}"
        key = re.sub(r"^stages\.(\d+)\.blocks\.", r"layers.\1.blocks.", key)
        if legacy_v0:
            key = re.sub(r"(layers\.\d+\.blocks\.\d+)\.norm\.", r"\1.ln_1.", key)
            key = re.sub(r"(layers\.\d+\.blocks\.\d+)\.op\.", r"\1.self_attention.", key)
            key = re.sub(r"^head\.fc\.", "head.", key)
        else:
            key = re.sub(r"^norm\.", "classifier.norm.", key)
            key = re.sub(r"^head\.fc\.", "classifier.head.", key)
        if grouped_linear and key.endswith(".x_proj_weight"):
            key, value = key[: -len("x_proj_weight")] + "x_proj.weight", value.flatten(0, 1)
        if grouped_linear and key.endswith(".dt_projs_weight"):
            key, value = key[: -len("dt_projs_weight")] + "dt_projs.weight", value.flatten(0, 1)
        out[key] = value.clone()
    return out


def test_official_key_layout_of_s1l8():
    """Shapes documented for the released vmamba_tiny_s1l8 checkpoint (VMamba issues #238, #56, #20)."""
    with torch.device("meta"):
        model = timm.create_model("vmamba_tiny_s1l8")
    official = {k: tuple(v.shape) for k, v in _to_official(model.state_dict()).items()}
    expect = {
        "patch_embed.0.weight": (48, 3, 3, 3), "patch_embed.2.weight": (48,), "patch_embed.5.weight": (96, 48, 3, 3),
        "patch_embed.7.bias": (96,),
        "layers.0.blocks.0.norm.weight": (96,),
        "layers.0.blocks.0.op.in_proj.weight": (96, 96), "layers.0.blocks.0.op.conv2d.weight": (96, 1, 3, 3),
        "layers.0.blocks.0.op.x_proj_weight": (4, 8, 96), "layers.0.blocks.0.op.dt_projs_weight": (4, 96, 6),
        "layers.0.blocks.0.op.dt_projs_bias": (4, 96), "layers.0.blocks.0.op.A_logs": (384, 1),
        "layers.0.blocks.0.op.Ds": (384,), "layers.0.blocks.0.op.out_norm.weight": (96,),
        "layers.0.blocks.0.op.out_proj.weight": (96, 96), "layers.0.blocks.0.mlp.fc1.weight": (384, 96),
        "layers.0.blocks.0.norm2.weight": (96,), "layers.2.blocks.7.mlp.fc2.weight": (384, 1536),
        "layers.0.downsample.1.weight": (192, 96, 3, 3), "layers.2.downsample.3.weight": (768,),
        "classifier.norm.weight": (768,), "classifier.head.weight": (1000, 768),
    }
    for key, shape in expect.items():
        assert official.get(key) == shape, key
    assert "layers.0.blocks.0.op.conv2d.bias" not in official
    assert not any(k.startswith("layers.3.downsample") for k in official)


def _roundtrip(name, tmp_path, legacy_v0=False, grouped_linear=False, wrap=True, **kwargs):
    torch.manual_seed(0)
    src = timm.create_model(name, **SMALL, **kwargs).eval()
    with torch.no_grad():  # non-trivial norms so that a swapped norm cannot go unnoticed
        for n, p in src.named_parameters():
            if "norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    official = _to_official(src.state_dict(), legacy_v0=legacy_v0, grouped_linear=grouped_linear)
    assert not any(k.startswith(("stem.", "stages.")) for k in official)
    path = tmp_path / "official.pth"
    torch.save({"model": official, "optimizer": {"state": {}}, "epoch": 3} if wrap else official, path)
    dst = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL,
                            **kwargs).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    return src, path


def test_load_official_v2_checkpoint(tmp_path):
    _roundtrip("vmamba_tiny_s1l8", tmp_path)


def test_load_legacy_v0_checkpoint(tmp_path):
    _roundtrip("vanilla_vmamba_tiny", tmp_path, legacy_v0=True)


def test_load_one_file_vmamba_py_layout(tmp_path):
    _roundtrip("test_vmamba", tmp_path, grouped_linear=True, wrap=False)


def test_load_adapts_in_chans_and_num_classes(tmp_path):
    src, path = _roundtrip("test_vmamba", tmp_path)
    model = timm.create_model("test_vmamba", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              in_chans=1, num_classes=5, **SMALL)
    assert model.stem.conv1.weight.shape[1] == 1 and model.head.fc.out_features == 5
    torch.testing.assert_close(model.stages[0].blocks[0].op.A_logs, src.stages[0].blocks[0].op.A_logs)
    assert model.pretrained_cfg["state_dict"] is None  # the weights are not kept alive by the cfg
    feats = timm.create_model("test_vmamba", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              features_only=True, **SMALL)
    assert len(feats(torch.randn(1, 3, 32, 32))) == 4


def test_mismatched_checkpoint_fails_loudly(tmp_path):
    _, path = _roundtrip("test_vmamba", tmp_path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        timm.create_model("test_vmamba", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                          ssm_ratio=2.0, **SMALL)


def test_official_checkpoint_with_pickled_config_loads_without_running_its_code(tmp_path, monkeypatch):
    """Official files pickle a yacs CfgNode next to 'model' and 'model_ema'; yacs is not installed here."""

    class CfgNode(dict):
        pass

    yacs, yacs_config = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    yacs_config.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", yacs_config)
    torch.manual_seed(0)
    src = timm.create_model("test_vmamba", **SMALL)
    cfg = CfgNode(MODEL=CfgNode(TYPE="vssm"))
    cfg.frozen = True
    path = tmp_path / "ckpt_epoch_1.pth"
    ema = {k: torch.zeros_like(v) for k, v in src.state_dict().items()}
    torch.save({"model": _to_official(src.state_dict()), "model_ema": ema, "config": cfg, "epoch": 1}, path)
    monkeypatch.delitem(sys.modules, "yacs.config")  # loading must not need (or import) yacs
    monkeypatch.delitem(sys.modules, "yacs")
    with pytest.raises(Exception):  # plain weights-only loading (timm's own file loader) refuses the config
        torch.load(path, weights_only=True)
    model = timm.create_model("test_vmamba", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL)
    # the 'model' weights are used (as the official evaluation does), not 'model_ema'
    torch.testing.assert_close(model.head.fc.weight, src.head.fc.weight)
    assert "yacs" not in sys.modules


def test_filter_passes_through_native_state_dicts():
    model = timm.create_model("test_vmamba", **SMALL)
    sd = model.state_dict()
    assert checkpoint_filter_fn(sd, model) is sd


@pytest.mark.parametrize("name", ["vanilla_vmamba_tiny", "vmamba_tiny_s1l8"])
def test_channel_first_and_last_layouts_agree(name):
    torch.manual_seed(0)
    a = timm.create_model(name, channel_first=False, **SMALL).eval()
    b = timm.create_model(name, channel_first=True, **SMALL).eval()
    b.load_state_dict(a.state_dict())
    assert a.output_fmt == "NHWC" and b.output_fmt == "NCHW"
    x = torch.randn(1, 3, 36, 28)  # odd stage sizes exercise PatchMerging padding
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)
        fa = a.forward_intermediates(x, intermediates_only=True)
        fb = b.forward_intermediates(x, intermediates_only=True)
    for u, v in zip(fa, fb):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)


def test_variant_hyper_parameters():
    with torch.device("meta"):
        v0 = timm.create_model("vanilla_vmamba_small")
        v2 = timm.create_model("vmamba_base_s2l15")
    op0, op2 = v0.stages[2].blocks[26].op, v2.stages[3].blocks[1].op
    assert (op0.d_state, op0.d_inner, op0.gate, op0.conv2d.bias is not None) == (16, 768, True, True)
    assert v0.stages[0].blocks[0].mlp is None and not v0.channel_first
    assert (op2.d_state, op2.d_inner, op2.gate, op2.conv2d.bias is None) == (1, 2048, False, True)
    assert v2.stages[0].blocks[0].mlp.fc1.out_features == 512 and not v2.channel_first  # channels-last trunk
    assert [len(s.blocks) for s in v2.stages] == [2, 2, 15, 2]
    assert type(v0.stages[1].downsample).__name__ == "PatchMerging2D"
    assert v2.stages[1].downsample.conv.kernel_size == (3, 3)
    cfg = v2.pretrained_cfg
    assert cfg["url"].endswith("%23v2cls/vssm_base_0229_ckpt_epoch_237.pth") and cfg["license"] == "mit"


def test_no_weight_decay_covers_ssm_parameters():
    model = timm.create_model("test_vmamba", **SMALL)
    skip = model.no_weight_decay()
    assert "stages.0.blocks.0.op.A_logs" in skip and "stages.0.blocks.0.op.Ds" in skip
    assert "stages.0.blocks.0.norm.weight" in skip and "stem.conv1.bias" in skip
    assert "stages.0.blocks.0.op.x_proj_weight" not in skip and "head.fc.weight" not in skip


def test_group_matcher_covers_every_parameter():
    from timm.models import group_parameters

    model = timm.create_model("test_vmamba", **SMALL)
    groups = group_parameters(model, model.group_matcher(coarse=False))
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
