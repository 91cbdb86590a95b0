"""Spatial-Mamba: structure, parameter counts, official checkpoint conversion, fresh eval kernels."""
import re

import pytest
import timm
import torch

import vmamba_zoo  # noqa: F401
from vmamba_zoo.models.spatial_mamba import SpatialMambaBlock, checkpoint_filter_fn

PUBLISHED = {"spatial_mamba_tiny": 27, "spatial_mamba_small": 43, "spatial_mamba_base": 96}  # README, M


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_param_counts_match_published(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - PUBLISHED[name]) <= 0.5, f"{name}: {count:.2f}M vs {PUBLISHED[name]}M"


def test_structure():
    with torch.device("meta"):
        model = timm.create_model("spatial_mamba_tiny")
    assert [f["num_chs"] for f in model.feature_info] == [64, 128, 256, 512]
    assert [len(s.blocks) for s in model.stages] == [2, 4, 8, 4]
    block = model.stages[0].blocks[0]
    assert isinstance(block, SpatialMambaBlock)
    op = block.op
    assert op.scan_pattern.name == "sasf" and op.num_routes == 1 and op.d_state == 1 and op.gate
    assert op.d_inner == 128 and op.dt_rank == 4 and op.conv2d.bias is not None
    assert block.cpe1.weight.shape == (64, 1, 3, 3) and block.mlp.fc1.weight.shape == (256, 64)
    assert model.stages[1].downsample.conv[0].conv.weight.shape == (512, 64, 1, 1)
    assert model.stem.conv3[0].conv.weight.shape == (256, 32, 3, 3)


def _to_official(state_dict):
    """Our keys -> the official SpatialMamba layout (``{'model': ...}``, single-route SSM tensors)."""
    out = {}
    for key, value in state_dict.items():
        key = key.replace("stem.", "patch_embed.", 1) if key.startswith("stem.") else key
        m = re.match(r"stages\.(\d+)\.downsample\.(.*)", key)
        if m:
            key = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        key = re.sub(r"^stages\.(\d+)\.blocks\.", r"layers.\1.blocks.", key)
        key = key.replace(".op.scan_pattern.", ".self_attention.state_fusion.").replace(".op.", ".self_attention.")
        if key.startswith("layers.") and ".blocks." in key:
            key = key.replace(".norm2.", ".ln_2.").replace(".norm.", ".ln_1.")
        key = key.replace("head.fc.", "head.")
        if key.endswith(("x_proj_weight", "dt_projs_weight", "dt_projs_bias")):
            value = value[0]  # K = 1: the official module keeps no route axis
        out[key] = value
    out["outnorm0.weight"] = torch.ones(4)  # detection backbones carry these; they are dropped
    return {"model": out, "epoch": 299}


def test_checkpoint_filter_on_synthesised_official_state_dict():
    torch.manual_seed(0)
    src = timm.create_model("test_spatial_mamba").eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    official = _to_official(src.state_dict())
    keys = official["model"]
    for k in ("patch_embed.conv1.conv.weight", "patch_embed.conv2.1.norm.running_mean", "patch_embed.conv3.1.conv.weight",
              "layers.0.blocks.0.cpe1.bias", "layers.0.blocks.0.ln_1.weight", "layers.0.blocks.0.ln_2.bias",
              "layers.0.blocks.0.self_attention.in_proj.weight", "layers.0.blocks.0.self_attention.state_fusion.kernel_3_2",
              "layers.0.blocks.0.self_attention.state_fusion.alpha", "layers.0.blocks.0.mlp.fc2.weight",
              "layers.0.downsample.conv.0.conv.bias", "layers.2.downsample.conv.2.norm.weight", "norm.weight", "head.weight"):
        assert k in keys, k
    assert keys["layers.0.blocks.0.self_attention.x_proj_weight"].shape == (1 + 2, 32)
    assert keys["layers.0.blocks.0.self_attention.dt_projs_weight"].shape == (32, 1)
    assert keys["layers.0.blocks.0.self_attention.A_logs"].shape == (32, 1)

    dst = timm.create_model("test_spatial_mamba").eval()
    dst.load_state_dict(checkpoint_filter_fn(official, dst), strict=True)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_eval_kernels_follow_weight_changes():
    """Upstream caches the merged SASF kernel at the first eval call and never refreshes it."""
    torch.manual_seed(0)
    model = timm.create_model("test_spatial_mamba").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        for block in model.stages[0].blocks:
            block.op.scan_pattern.alpha.mul_(3.0)
            block.op.scan_pattern.kernel_3.normal_()
        after = model(x)
    fresh = timm.create_model("test_spatial_mamba").eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(after, fresh(x))
    assert not torch.allclose(before, after)


def test_channels_first_trunk_matches_channels_last():
    torch.manual_seed(0)
    last = timm.create_model("test_spatial_mamba").eval()
    first = timm.create_model("test_spatial_mamba", channel_first=True).eval()
    first.load_state_dict(last.state_dict())
    x = torch.randn(1, 3, 36, 44)
    with torch.no_grad():
        torch.testing.assert_close(first(x), last(x), rtol=1e-4, atol=1e-5)


def test_pretrained_cfgs():
    for size in ("tiny", "small", "base"):
        cfg = timm.get_pretrained_cfg(f"spatial_mamba_{size}.in1k")
        assert cfg.url.startswith("https://drive.usercontent.google.com/download?id=")
        assert cfg.license == "apache-2.0" and cfg.paper_ids == "arXiv:2410.15091"


def test_pretrained_load_from_an_official_format_file(tmp_path):
    """pretrained=True with a local official-format file: hub loading + conversion + strict load."""
    torch.manual_seed(0)
    src = timm.create_model("test_spatial_mamba", num_classes=1000).eval()
    path = tmp_path / "spatialmamba_test.pth"
    torch.save(_to_official(src.state_dict()), path)
    model = timm.create_model("test_spatial_mamba", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), src(x))
