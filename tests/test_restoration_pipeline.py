"""On-the-fly paired data, the mmengine model/metrics, and a short training run of a restoration config."""
import glob
import os

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DATASETS, METRICS, MODELS

import vmamba_zoo.mm.restoration  # noqa: F401  (registration)
from vmamba_zoo.mm.restoration_metrics import RestorationPSNR, RestorationSSIM
from vmamba_zoo.mm.restoration_model import RestorationModel
from vmamba_zoo.restoration import PairedDegradationDataset, calculate_psnr, load_image
from vmamba_zoo.restoration.degradations import bicubic_downsample, jpeg_compress, matlab_imresize, parse_degradations

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "configs", "restoration")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("clean")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(d / f"im{i}.png")
    return str(d)


def test_noise_validation_follows_mambair_protocol(image_dir):
    ds = PairedDegradationDataset(image_dir, dict(type="noise", sigma=25), mode="val", seed=0)
    item = ds[1]
    gt = load_image(sorted(glob.glob(os.path.join(image_dir, "*.png")))[1])
    # MambaIR: np.random.seed(0) per image, noise ~ N(0, sigma/255) drawn on the BGR array, no clipping
    noise_bgr = np.random.RandomState(0).normal(0, 25 / 255.0, gt.shape)
    expected_bgr = gt[..., ::-1].astype(np.float64) / 255.0 + noise_bgr
    expected = torch.from_numpy(expected_bgr[..., ::-1].transpose(2, 0, 1).astype(np.float32))
    torch.testing.assert_close(item["inputs"], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(item["data_samples"]["gt"], torch.from_numpy(gt.transpose(2, 0, 1) / 255.0).float())
    assert item["inputs"].min() < 0 or item["inputs"].max() > 1  # not clipped
    torch.testing.assert_close(ds[1]["inputs"], item["inputs"], rtol=0, atol=0)  # fixed


def test_train_items_are_random_crops(image_dir):
    ds = PairedDegradationDataset(image_dir, [dict(type="jpeg", quality=30), dict(type="noise", sigma=10)],
                                  mode="train", gt_size=16, repeat=3)
    assert len(ds) == 6
    torch.manual_seed(0)
    a, b = ds[0], ds[0]
    assert a["inputs"].shape == (3, 16, 16) and a["data_samples"]["gt"].shape == (3, 16, 16)
    assert not torch.equal(a["inputs"], b["inputs"])
    torch.manual_seed(0)
    torch.testing.assert_close(ds[0]["inputs"], a["inputs"], rtol=0, atol=0)  # reproducible from the seed


def test_bicubic_and_jpeg_degradations(image_dir):
    ds = PairedDegradationDataset(image_dir, dict(type="bicubic", scale=4), mode="train", gt_size=16)
    torch.manual_seed(1)
    item = ds[0]
    assert item["inputs"].shape == (3, 4, 4) and item["data_samples"]["scale"] == 4
    val = PairedDegradationDataset(image_dir, dict(type="bicubic", scale=3), mode="val")[0]
    assert val["data_samples"]["gt"].shape == (3, 39, 51) and val["inputs"].shape == (3, 13, 17)  # mod-crop
    # a flat image stays flat under bicubic; JPEG of a smooth image stays close
    flat = np.full((12, 12, 3), 77, np.uint8)
    assert (bicubic_downsample(flat, 2) == 77).all()
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8)[None, :, None], (32, 1, 3))
    assert calculate_psnr(jpeg_compress(ramp, 90), ramp) > 35
    with pytest.raises(ValueError, match="last"):
        parse_degradations([dict(type="noise", sigma=5), dict(type="bicubic", scale=2)])
    with pytest.raises(ValueError, match="multiple of the scale"):
        PairedDegradationDataset(image_dir, dict(type="bicubic", scale=3), gt_size=16)


def test_matlab_imresize_golden_values():
    """Values of BasicSR's MATLAB-compatible ``imresize`` (basicsr/utils/matlab_functions.py, which
    reproduces MATLAB's antialiased bicubic) on a 7x6 pattern: sizes round up, borders mirror."""
    i, j = np.meshgrid(np.arange(7), np.arange(6), indexing="ij")
    img = (((i * 7 + j * 13) % 17) / 16.0)[..., None]
    half = np.array([[0.4177510, 0.5636870, 0.4869450], [0.4766990, 0.5220370, 0.4709910],
                     [0.4276150, 0.5493140, 0.5546880], [0.3492780, 0.4093680, 0.4894010]])
    third = np.array([[0.4833010, 0.5025530], [0.4544940, 0.5262160], [0.3926040, 0.5171180]])
    np.testing.assert_allclose(matlab_imresize(img, 0.5)[..., 0], half, atol=2e-6)
    np.testing.assert_allclose(matlab_imresize(img, 1 / 3)[..., 0], third, atol=2e-6)
    # uint8 in -> rounded uint8 out; a constant image stays constant
    assert matlab_imresize(np.full((9, 9, 3), 200, np.uint8), 0.5).tolist() == np.full((5, 5, 3), 200).tolist()


def test_sample_images_load_offline():
    img = load_image("skimage:chelsea")
    assert img.shape == (300, 451, 3) and img.dtype == np.uint8
    assert load_image("pywt:aero", "gray").shape == (512, 512, 1)
    with pytest.raises(ValueError, match="unknown sample image"):
        load_image("skimage:nope")


def test_model_loss_predict_and_metrics():
    net = dict(type="MambaIR", upscale=2, embed_dim=8, depths=(1,), d_state=4, mlp_ratio=1.0,
               upsampler="pixelshuffledirect", squeeze_factor=4)
    model = MODELS.build(dict(type="RestorationModel", network=net, loss="charbonnier", scale=2,
                              test_cfg=dict(tile_size=8, overlap=4)))
    assert isinstance(model, RestorationModel)
    assert MODELS.build(dict(type="RestorationModel", network=net)).scale == 2  # from the network
    with pytest.raises(ValueError, match="contradicts"):
        MODELS.build(dict(type="RestorationModel", network=net, scale=4))
    gts = [torch.rand(3, 12, 12) for _ in range(2)]
    batch = dict(inputs=[torch.rand(3, 6, 6) for _ in range(2)], data_samples=dict(gt=gts, img_path=["a", "b"]))
    data = model.data_preprocessor(batch, training=True)
    losses = model(**data, mode="loss")
    assert set(losses) == {"loss_pix"} and losses["loss_pix"].item() > 0
    # predict accepts differently sized images (a list) and restores them tile by tile
    batch = dict(inputs=[torch.rand(3, 10, 11), torch.rand(3, 6, 6)],
                 data_samples=[dict(gt=torch.rand(3, 20, 22)), dict(gt=torch.rand(3, 12, 12))])
    data = model.data_preprocessor(batch, training=False)
    with torch.no_grad():
        out = model(**data, mode="predict")
    assert [o["pred"].shape for o in out] == [(3, 20, 22), (3, 12, 12)]
    psnr, ssim = METRICS.build(dict(type="RestorationPSNR")), METRICS.build(dict(type="RestorationSSIM"))
    assert isinstance(psnr, RestorationPSNR) and isinstance(ssim, RestorationSSIM)
    # metric = mean of per-image BasicSR PSNR on uint8-rounded RGB images
    samples = [dict(pred=torch.full((3, 12, 12), 0.5), gt=torch.full((3, 12, 12), 0.6)),
               dict(pred=torch.zeros(3, 12, 12), gt=torch.full((3, 12, 12), 0.1))]
    psnr.process({}, samples)
    got = psnr.compute_metrics(psnr.results)["PSNR"]
    expected = np.mean([10 * np.log10(255**2 / (128 - 153) ** 2), 10 * np.log10(255**2 / 26**2)])
    assert got == pytest.approx(expected, abs=1e-9)


def test_wrapper_loads_official_network_checkpoints(tmp_path):
    """mmengine's load_checkpoint (load_from, tools/test.py) accepts a bare BasicSR {'params': ...} file."""
    from mmengine.runner import load_checkpoint

    net_cfg = dict(type="MambaIR", upscale=2, embed_dim=8, depths=(1,), d_state=4, mlp_ratio=1.0,
                   upsampler="pixelshuffle", squeeze_factor=4)
    source = MODELS.build(net_cfg)
    official = {"params": {"module." + k: torch.randn_like(v) for k, v in source.state_dict().items()}}
    torch.save(official, tmp_path / "official.pth")
    model = MODELS.build(dict(type="RestorationModel", network=net_cfg, scale=2))
    load_checkpoint(model, str(tmp_path / "official.pth"), strict=True)
    for k, v in model.network.state_dict().items():
        assert torch.equal(v, official["params"]["module." + k]), k
    # the wrapper's own checkpoints (keys under 'network.') still load as usual
    other = MODELS.build(dict(type="RestorationModel", network=net_cfg, scale=2))
    other.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(other.network.conv_first.weight, model.network.conv_first.weight)


def test_all_configs_parse_and_build_their_datasets_or_models():
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "[!_]*.py"))):
        cfg = Config.fromfile(path)
        assert cfg.model.type == "RestorationModel", path
        for key in ("train_dataloader", "val_dataloader"):
            assert cfg[key].dataset.type == "PairedDegradationDataset"
        if all(isinstance(cfg[k].dataset.images, list) for k in ("train_dataloader", "val_dataloader")):
            assert len(DATASETS.build(cfg.val_dataloader.dataset)) >= 1


def test_short_training_run_of_a_config(tmp_path):
    from mmengine.runner import Runner

    cfg = Config.fromfile(os.path.join(CONFIG_DIR, "mambair_tiny_sr_x2_skimage.py"))
    cfg.work_dir = str(tmp_path)
    cfg.train_cfg.max_iters = 3
    cfg.train_cfg.val_interval = 3
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.dataset.gt_size = 16
    cfg.val_dataloader.dataset.val_size = 24
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 3
    runner = Runner.from_cfg(cfg)
    before = {k: v.clone() for k, v in runner.model.network.state_dict().items()}
    runner.train()
    after = runner.model.network.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    metrics = runner.val_loop.run()
    assert np.isfinite(metrics["PSNR"]) and 0 < metrics["SSIM"] <= 1
    assert glob.glob(os.path.join(str(tmp_path), "*.pth"))
