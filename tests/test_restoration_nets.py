"""Restoration networks: shapes, gradients, official MambaIR parameter layout and checkpoint conversion."""
import math

import pytest
import torch

from vmamba_zoo.models.mambair import MambaIR, checkpoint_filter_fn
from vmamba_zoo.models.restoration_nets import SerpentUNet, WaveletMambaIR, haar_dwt2d, haar_idwt2d
from vmamba_zoo.restoration import create_restoration_model, list_restoration_models

TINY = dict(embed_dim=12, depths=(1,), d_state=4, squeeze_factor=4)


def _fwd_bwd(net, x, out_shape):
    y = net(x)
    assert y.shape == out_shape
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


@pytest.mark.parametrize("upscale,upsampler,in_chans", [
    (2, "pixelshuffle", 3), (3, "pixelshuffle", 3), (4, "pixelshuffledirect", 3), (1, "", 3), (1, "", 1)])
def test_mambair_forward_backward(upscale, upsampler, in_chans):
    torch.manual_seed(0)
    net = MambaIR(upscale=upscale, upsampler=upsampler, in_chans=in_chans, mlp_ratio=1.2, **TINY)
    x = torch.rand(1, in_chans, 6, 7)
    _fwd_bwd(net, x, (1, in_chans, 6 * upscale, 7 * upscale))


def test_serpent_unet_and_wavelet_forward_backward():
    torch.manual_seed(0)
    _fwd_bwd(SerpentUNet(dims=(8, 12), depths=(1, 1), d_state=4, squeeze_factor=4), torch.rand(1, 3, 7, 9),
             (1, 3, 7, 9))
    _fwd_bwd(SerpentUNet(dims=(8, 12), depths=(1, 1), d_state=4, squeeze_factor=4, upscale=2),
             torch.rand(1, 3, 6, 6), (1, 3, 12, 12))
    _fwd_bwd(WaveletMambaIR(shallow_dim=4, embed_dim=12, depths=(1,), levels=2, d_state=4, squeeze_factor=4),
             torch.rand(1, 3, 10, 13), (1, 3, 10, 13))


def test_grad_checkpointing_gives_the_same_output():
    torch.manual_seed(0)
    for net in (MambaIR(upscale=2, upsampler="pixelshuffle", drop_path_rate=0.0, **TINY),
                SerpentUNet(dims=(8, 12), depths=(1, 1), d_state=4, squeeze_factor=4)):
        x = torch.rand(1, 3, 6, 6)
        ref = net(x)
        net.set_grad_checkpointing(True)
        out = net(x)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        out.mean().backward()
        assert all(p.grad is not None for p in net.parameters())


def test_haar_is_orthonormal_and_invertible():
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    y = haar_dwt2d(x)
    assert y.shape == (2, 12, 4, 3)
    torch.testing.assert_close(haar_idwt2d(y), x)
    torch.testing.assert_close(y.square().sum(), x.square().sum())  # energy preserved
    torch.testing.assert_close(y[:, :3], torch.nn.functional.avg_pool2d(x, 2) * 2)  # LL band
    with pytest.raises(ValueError, match="even"):
        haar_dwt2d(x[..., :5])


def test_registry_lists_all_families():
    names = list_restoration_models()
    for expected in ("mambair_sr_x2", "mambair_sr_x3", "mambair_sr_x4", "mambair_light_sr_x2", "mambair_color_dn",
                     "mambair_gray_dn", "serpent_unet_small", "wavelet_mambair_small"):
        assert expected in names
    with pytest.raises(ValueError, match="unknown restoration model"):
        create_restoration_model("mambair_nope")


# ------------------------------------------------------------------ official layout
def official_mambair_shapes(in_chans=3, embed_dim=60, depths=(6, 6, 6, 6), d_state=16, mlp_ratio=2.0, upscale=2,
                            upsampler="", num_feat=64, squeeze=30):
    """Key -> shape of csguoh/MambaIR's ``basicsr/archs/mambair_arch.py`` state dict, written out by hand."""
    c, di, r, n = embed_dim, int(mlp_ratio * embed_dim), math.ceil(embed_dim / 16), d_state
    s = {"conv_first.weight": (c, in_chans, 3, 3), "conv_first.bias": (c,),
         "patch_embed.norm.weight": (c,), "patch_embed.norm.bias": (c,)}
    for i, depth in enumerate(depths):
        for j in range(depth):
            p = f"layers.{i}.residual_group.blocks.{j}."
            s.update({p + "ln_1.weight": (c,), p + "ln_1.bias": (c,), p + "skip_scale": (c,),
                      p + "ln_2.weight": (c,), p + "ln_2.bias": (c,), p + "skip_scale2": (c,)})
            a = p + "self_attention."
            s.update({a + "in_proj.weight": (2 * di, c), a + "conv2d.weight": (di, 1, 3, 3), a + "conv2d.bias": (di,),
                      a + "x_proj_weight": (4, r + 2 * n, di), a + "dt_projs_weight": (4, di, r),
                      a + "dt_projs_bias": (4, di), a + "A_logs": (4 * di, n), a + "Ds": (4 * di,),
                      a + "out_norm.weight": (di,), a + "out_norm.bias": (di,), a + "out_proj.weight": (c, di)})
            cab = p + "conv_blk.cab."
            if upsampler == "pixelshuffledirect":
                h = c // 2
                s.update({cab + "0.weight": (h, c, 1, 1), cab + "0.bias": (h,), cab + "1.weight": (h, 1, 3, 3),
                          cab + "1.bias": (h,), cab + "3.weight": (c, h, 1, 1), cab + "3.bias": (c,),
                          cab + "4.weight": (c, 1, 3, 3), cab + "4.bias": (c,)})
                ca = cab + "5.attention."
            else:
                h = c // 3
                s.update({cab + "0.weight": (h, c, 3, 3), cab + "0.bias": (h,), cab + "2.weight": (c, h, 3, 3),
                          cab + "2.bias": (c,)})
                ca = cab + "3.attention."
            q = c // squeeze
            s.update({ca + "1.weight": (q, c, 1, 1), ca + "1.bias": (q,), ca + "3.weight": (c, q, 1, 1),
                      ca + "3.bias": (c,)})
        s.update({f"layers.{i}.conv.weight": (c, c, 3, 3), f"layers.{i}.conv.bias": (c,)})
    s.update({"norm.weight": (c,), "norm.bias": (c,), "conv_after_body.weight": (c, c, 3, 3),
              "conv_after_body.bias": (c,)})
    if upsampler == "pixelshuffle":
        s.update({"conv_before_upsample.0.weight": (num_feat, c, 3, 3), "conv_before_upsample.0.bias": (num_feat,)})
        if upscale == 3:
            s.update({"upsample.0.weight": (9 * num_feat, num_feat, 3, 3), "upsample.0.bias": (9 * num_feat,)})
        else:
            for k in range(int(math.log2(upscale))):
                s.update({f"upsample.{2 * k}.weight": (4 * num_feat, num_feat, 3, 3),
                          f"upsample.{2 * k}.bias": (4 * num_feat,)})
        s.update({"conv_last.weight": (in_chans, num_feat, 3, 3), "conv_last.bias": (in_chans,)})
    elif upsampler == "pixelshuffledirect":
        s.update({"upsample.0.weight": (upscale**2 * in_chans, c, 3, 3), "upsample.0.bias": (upscale**2 * in_chans,)})
    else:
        s.update({"conv_last.weight": (in_chans, c, 3, 3), "conv_last.bias": (in_chans,)})
    return s


def _synth(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v, generator=g) for k, v in shapes.items()}


LIGHT_X4 = dict(upscale=4, embed_dim=60, depths=(6,) * 4, d_state=10, mlp_ratio=1.2, upsampler="pixelshuffledirect")


@pytest.mark.parametrize("name,cfg,count", [
    ("mambair_light_sr_x2", dict(LIGHT_X4, upscale=2), 905_016),  # paper / fvcore counts
    ("mambair_light_sr_x4", LIGHT_X4, 924_492),
])
def test_official_configs_match_layout_and_parameter_count(name, cfg, count):
    shapes = official_mambair_shapes(**cfg)
    assert sum(math.prod(s) for s in shapes.values()) == count
    net = create_restoration_model(name)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == shapes
    assert sum(p.numel() for p in net.parameters()) == count


@pytest.mark.parametrize("cfg", [
    dict(upscale=2, upsampler="pixelshuffle", embed_dim=30, depths=(2, 1), d_state=6, mlp_ratio=2.0),
    dict(upscale=3, upsampler="pixelshuffle", embed_dim=30, depths=(1,), d_state=4, mlp_ratio=1.2),
    dict(upscale=4, upsampler="pixelshuffledirect", embed_dim=30, depths=(1,), d_state=4, mlp_ratio=1.2),
    dict(upscale=1, upsampler="", embed_dim=30, depths=(1, 1), d_state=16, mlp_ratio=1.2, in_chans=1),
])
def test_converter_loads_synthesised_official_checkpoints(cfg, tmp_path):
    shapes = official_mambair_shapes(**cfg)
    ema, raw = _synth(shapes, 1), _synth(shapes, 2)
    # BasicSR checkpoint: {'params': ..., 'params_ema': ...}, saved from a DataParallel model
    ckpt = {"params": {"module." + k: v for k, v in raw.items()}, "params_ema": ema}
    net = MambaIR(**cfg)
    net.load_state_dict(checkpoint_filter_fn(ckpt, net), strict=True)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, ema[k], rtol=0, atol=0)
    net.load_state_dict(checkpoint_filter_fn(ckpt, net, param_key="params"), strict=True)
    torch.testing.assert_close(net.state_dict()["conv_first.weight"], raw["conv_first.weight"], rtol=0, atol=0)
    # through the file loader of the registry (torch file with weights_only loading)
    path = tmp_path / "official.pth"
    torch.save({"params": raw}, path)
    net2 = create_restoration_model("mambair_tiny", checkpoint_path=str(path), **dict(cfg, squeeze_factor=30))
    torch.testing.assert_close(net2.state_dict()["norm.weight"], raw["norm.weight"], rtol=0, atol=0)
    # the loaded network runs
    with torch.no_grad():
        y = net2(torch.rand(1, cfg.get("in_chans", 3), 5, 6))
    assert y.shape == (1, cfg.get("in_chans", 3), 5 * cfg["upscale"], 6 * cfg["upscale"])


def test_converter_rejects_wrong_shapes():
    cfg = dict(upscale=1, upsampler="", embed_dim=30, depths=(1,), d_state=16, mlp_ratio=1.2)
    sd = _synth(official_mambair_shapes(**dict(cfg, d_state=8)), 0)
    net = MambaIR(**cfg)
    with pytest.raises(ValueError, match=r"x_proj_weight.*has shape"):
        checkpoint_filter_fn({"params": sd}, net)
    with pytest.raises(KeyError, match="param_key"):
        checkpoint_filter_fn({"params": sd}, net, param_key="params_ema")


def test_mambair_accepts_official_yaml_arguments():
    # a network_g section of options/test/mambair/test_MambaIR_lightSR_x4.yml (tiny widths)
    net = MambaIR(type="MambaIR", upscale=2, in_chans=3, img_size=64, img_range=1.0, d_state=4, depths=[1],
                  embed_dim=12, mlp_ratio=1.2, upsampler="pixelshuffledirect", resi_connection="1conv")
    assert net.upscale == 2
    with pytest.raises(TypeError, match="unexpected"):
        MambaIR(window_size=8, **TINY)
    with pytest.raises(ValueError, match="upsampler"):
        MambaIR(upscale=2, upsampler="", **TINY)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_restoration_nets_on_cuda_match_cpu():
    torch.manual_seed(0)
    for net in (MambaIR(upscale=2, upsampler="pixelshuffle", **TINY),
                WaveletMambaIR(shallow_dim=4, embed_dim=12, depths=(1,), levels=2, d_state=4, squeeze_factor=4)):
        net.eval()
        x = torch.rand(2, 3, 16, 20)
        with torch.no_grad():
            ref = net(x)
            out = net.cuda()(x.cuda()).cpu()
        torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-4)
