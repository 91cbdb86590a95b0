"""timm API conformance of every zoo model (after timm's tests/test_models.py).

Generic over :func:`vmamba_zoo.models.list_zoo_models`, so every registered
family is covered.  Full-size models are only built on the ``meta`` device
(structure, parameter counts, default-cfg shape checks at the cfg's input
size); numerical checks run on real CPU tensors at 32x32 with each model
shrunk by its family's ``shrink_kwargs`` (fewer blocks, same layer settings).
"""
import math

import pytest
import timm
import torch

from vmamba_zoo.models import MODEL_FAMILIES, list_zoo_models

MODELS = list_zoo_models()
FAMILY = {name: fam for fam in MODEL_FAMILIES.values() for name in list_zoo_models(fam.name)}
SIZE = 32


def _meta(name, **kwargs):
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


def _small(name, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, **{**FAMILY[name].shrink_kwargs, **kwargs})


def _spatial(t, fmt):
    return tuple(t.shape[2:4]) if fmt == "NCHW" else tuple(t.shape[1:3])


def _channels(t, fmt):
    return t.shape[1] if fmt == "NCHW" else t.shape[-1]


def test_zoo_models_are_registered():
    assert MODELS, "no zoo models registered"
    assert "vmamba_tiny_s1l8" in MODELS and "test_vmamba" in MODELS
    for fam in MODEL_FAMILIES.values():
        assert list_zoo_models(fam.name), f"family {fam.name} registers no models"
        for pattern in fam.scan_patterns:
            from vmamba_zoo.scan import get_scan_pattern_cls

            get_scan_pattern_cls(pattern)


@pytest.mark.parametrize("name", MODELS)
def test_param_count_matches_published(name):
    published = FAMILY[name].params_m.get(name)
    if name.startswith("test_"):
        assert published is None
        return
    assert published is not None, f"{name}: add its published parameter count to its family's params_m"
    count = sum(p.numel() for p in _meta(name).parameters()) / 1e6
    assert abs(count - published) <= 0.5, f"{name}: {count:.2f}M parameters, published {published}M"


@pytest.mark.parametrize("name", MODELS)
def test_default_cfgs(name):
    model = _meta(name)
    cfg = model.pretrained_cfg
    fmt = getattr(model, "output_fmt", "NCHW")
    assert model.num_classes == cfg["num_classes"] >= 0
    assert model.num_features > 0 and model.head_hidden_size > 0
    state_dict = model.state_dict()
    for key in ("first_conv", "classifier"):
        assert cfg[key] + ".weight" in state_dict, f"{key}={cfg[key]!r} is not a module with a weight"
    for tag in timm.list_pretrained(f"{name}.*"):
        tag_cfg = timm.get_pretrained_cfg(tag)
        assert tag_cfg.url.startswith("https://") and tag_cfg.license and tag_cfg.paper_ids, tag

    x = torch.empty(1, *cfg["input_size"], device="meta")
    feats = model.forward_features(x)
    assert _spatial(feats, fmt) == tuple(cfg["pool_size"]) and _channels(feats, fmt) == model.num_features
    assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)
    assert model.forward_head(feats).shape == (1, cfg["num_classes"])
    model.reset_classifier(0)
    assert model.forward_head(feats).shape == (1, model.head_hidden_size)
    model.reset_classifier(0, "")
    unpooled = model.forward_head(feats)
    assert unpooled.dim() == 4 and _spatial(unpooled, fmt) == tuple(cfg["pool_size"])
    model = _meta(name, num_classes=0, global_pool="")
    assert model.forward_head(feats).shape == unpooled.shape
    model = _meta(name, in_chans=1, num_classes=7)
    assert model.get_submodule(cfg["first_conv"]).weight.shape[1] == 1
    assert model.get_classifier().out_features == 7


@pytest.mark.parametrize("name", MODELS)
def test_forward_and_grad_checkpointing(name):
    model = _small(name).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, model.num_classes) and torch.isfinite(out).all()
        model.set_grad_checkpointing()
        torch.testing.assert_close(model(x), out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_backward(name):
    model = _small(name, num_classes=42).train()
    out = model(torch.randn(2, 3, SIZE, SIZE))
    assert out.shape == (2, 42)
    out.mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, f"{n} has no gradient"
        assert torch.isfinite(p.grad).all(), f"{n} has a non-finite gradient"


@pytest.mark.parametrize("name", MODELS)
def test_features_only(name):
    model = _small(name, features_only=True).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, SIZE, SIZE))
    channels = model.feature_info.channels()
    reductions = model.feature_info.reduction()
    assert len(outs) == len(channels) >= 3
    for o, c, r in zip(outs, channels, reductions):
        assert o.dim() == 4 and o.shape[1] == c  # NCHW regardless of the trunk's layout
        assert o.shape[2] <= math.ceil(SIZE / r) + 1 and o.shape[3] <= math.ceil(SIZE / r) + 1


@pytest.mark.parametrize("name", MODELS)
def test_forward_intermediates(name):
    model = _small(name).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    info = model.feature_info
    with torch.no_grad():
        feats = model.forward_features(x)
        final, inters = model.forward_intermediates(x)
        torch.testing.assert_close(final, feats)
        assert [t.shape[1] for t in inters] == [i["num_chs"] for i in info]
        for t, i in zip(inters, info):
            assert t.shape[2] <= math.ceil(SIZE / i["reduction"]) + 1
        last = model.forward_intermediates(x, indices=1, intermediates_only=True)
        assert len(last) == 1 and torch.equal(last[0], inters[-1])
        model.set_grad_checkpointing()
        final_ckpt, _ = model.forward_intermediates(x)
        torch.testing.assert_close(final_ckpt, feats, rtol=1e-4, atol=1e-5)
    model.prune_intermediate_layers(indices=[0, 1])
    with torch.no_grad():
        pruned = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert len(pruned) == 2
    for a, b in zip(pruned, inters[:2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
