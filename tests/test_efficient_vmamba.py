"""EfficientVMamba: structure, parameter counts, official checkpoint conversion."""
import re

import pytest
import timm
import torch

import vmamba_zoo  # noqa: F401
from vmamba_zoo.models.efficient_vmamba import EVSSBlock, InvertedResidual, checkpoint_filter_fn

# official training logs (classification/logs/log_efficient_vmamba_*.txt)
PUBLISHED = {"efficient_vmamba_tiny": 6.494, "efficient_vmamba_small": 11.274, "efficient_vmamba_base": 33.717}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_param_counts_match_training_logs(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - PUBLISHED[name]) < 0.001, f"{name}: {count:.4f}M vs {PUBLISHED[name]}M"


def test_structure():
    with torch.device("meta"):
        model = timm.create_model("efficient_vmamba_tiny")
    assert [f["num_chs"] for f in model.feature_info] == [48, 96, 192, 384]
    assert [len(s.blocks) for s in model.stages] == [2, 2, 4, 2]
    for i, stage in enumerate(model.stages):
        kind = EVSSBlock if i < 2 else InvertedResidual
        assert all(isinstance(b, kind) for b in stage.blocks)
    block = model.stages[0].blocks[0]
    assert block.op.scan_pattern.name == "atrous" and block.op.num_routes == 4
    assert block.op.d_state == 16 and block.op.d_inner == 96 and block.op.gate
    assert not hasattr(block, "mlp")
    ir = model.stages[2].blocks[0]
    assert ir.conv_pw[0].weight.shape == (768, 192, 1, 1) and ir.se.conv_reduce.weight.shape == (96, 768, 1, 1)


def test_one_channel_attention_is_shared_by_both_branches():
    torch.manual_seed(0)
    block = EVSSBlock(8, ssm_d_state=2).eval()
    calls = []
    hook = block.se.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    x = torch.randn(1, 4, 4, 8)
    with torch.no_grad():
        out = block(x)
        hook.remove()
        assert len(calls) == 2  # the same module gates the SSM and the conv branch
        ssm = block.op(block.norm(x))
        conv = block.conv_branch(block.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        torch.testing.assert_close(out, x + block.se(ssm) + block.se(conv))
    assert sum(1 for m in block.modules() if type(m).__name__ == "BiAttn") == 1


def _to_official(state_dict, depths, num_ssm_stages=2):
    """Our keys -> the official EfficientVSSM layout (``module.module.`` DDP prefix, ``state_dict`` wrapper)."""
    out = {}
    for key, value in state_dict.items():
        key = key.replace("stem.proj.", "patch_embed.0.").replace("stem.norm.", "patch_embed.2.")
        m = re.match(r"stages\.(\d+)\.downsample\.(.*)", key)
        if m:
            i = int(m.group(1)) - 1
            key = (f"layers.{i}.downsample.{m.group(2)}" if i < num_ssm_stages
                   else f"layers.{i}.{depths[i] + 2}.{m.group(2)}")
        m = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", key)
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            key = f"layers.{i}.blocks.{j}.{m.group(3)}" if i < num_ssm_stages else f"layers.{i}.{j + 1}.{m.group(3)}"
        key = key.replace("head.fc.", "classifier.head.")
        key = re.sub(r"^norm\.", "classifier.norm.", key)
        out["module.module." + key] = value
    return {"state_dict": out, "epoch": 299}


def test_checkpoint_filter_on_synthesised_official_state_dict():
    torch.manual_seed(0)
    src = timm.create_model("test_efficient_vmamba").eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    depths = [len(s.blocks) for s in src.stages]  # 1-1-1-1
    official = _to_official(src.state_dict(), depths)
    keys = official["state_dict"]
    # the official layout, spelled out for depths 1-1-1-1
    for k in ("patch_embed.0.weight", "patch_embed.2.bias", "layers.0.blocks.0.op.x_proj_weight",
              "layers.0.blocks.0.conv_branch.3.bias", "layers.0.blocks.0.se.global_reduce.weight",
              "layers.0.downsample.reduction.weight", "layers.1.downsample.norm.weight",
              "layers.2.1.conv_pw.0.weight", "layers.2.1.conv_dw.1.running_var", "layers.2.1.se.conv_expand.bias",
              "layers.2.3.reduction.weight", "layers.3.1.conv_pw2.1.weight", "classifier.norm.weight",
              "classifier.head.bias"):
        assert "module.module." + k in keys, k
    assert keys["module.module.layers.0.blocks.0.op.x_proj_weight"].shape == (4, 1 + 2 * 4, 32)
    assert keys["module.module.layers.0.blocks.0.op.A_logs"].shape == (4 * 32, 4)

    dst = timm.create_model("test_efficient_vmamba").eval()
    converted = checkpoint_filter_fn(official, dst)
    assert converted["stages.3.downsample.reduction.weight"] is keys["module.module.layers.2.3.reduction.weight"]
    assert converted["stages.2.blocks.0.conv_pw.0.weight"] is keys["module.module.layers.2.1.conv_pw.0.weight"]
    dst.load_state_dict(converted, strict=True)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))
    ours = src.state_dict()
    assert checkpoint_filter_fn(ours, dst) is ours  # already-converted dicts pass through
    with pytest.raises(KeyError, match="unexpected official key"):
        checkpoint_filter_fn({"layers.2.7.weight": torch.zeros(1), "patch_embed.0.weight": torch.zeros(1)}, dst)


def test_channels_first_trunk_matches_channels_last():
    torch.manual_seed(0)
    last = timm.create_model("test_efficient_vmamba").eval()
    first = timm.create_model("test_efficient_vmamba", channel_first=True).eval()
    first.load_state_dict(last.state_dict())
    x = torch.randn(1, 3, 36, 44)  # odd stage maps (9x11, 5x6, ...) exercise the atrous padding
    with torch.no_grad():
        torch.testing.assert_close(first(x), last(x), rtol=1e-4, atol=1e-5)


def test_pretrained_cfgs_point_to_the_hub_checkpoints():
    for size in ("tiny", "small", "base"):
        cfg = timm.get_pretrained_cfg(f"efficient_vmamba_{size}.in1k")
        assert cfg.url == (f"https://huggingface.co/TerryPei/EfficientVMamba-{size.capitalize()}/resolve/main/"
                           f"efficient_vmamba_{size}.ckpt")
        assert cfg.license == "apache-2.0" and cfg.paper_ids == "arXiv:2403.09977"


def test_pretrained_load_from_an_official_format_file(tmp_path):
    """pretrained=True with a local official-format file: hub loading + conversion + strict load."""
    torch.manual_seed(0)
    src = timm.create_model("test_efficient_vmamba", num_classes=1000).eval()
    path = tmp_path / "efficient_vmamba_test.ckpt"
    torch.save(_to_official(src.state_dict(), [len(s.blocks) for s in src.stages]), path)
    model = timm.create_model("test_efficient_vmamba", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), src(x))
