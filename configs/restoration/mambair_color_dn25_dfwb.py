# MambaIR colour Gaussian denoising, sigma = 25 (options/train/mambair/train_MambaIR_ColorDN_level25.yml):
# DFWB (DIV2K + Flickr2K + BSD500 + WED) clean images, gt 128 crops, batch 2 per GPU x 8 GPUs,
# Charbonnier (eps 1e-3 under the root, BasicSR's definition), Adam 1e-4, 800k iterations halving at
# 400k/600k/700k/750k, initialised from the sigma = 15 model (set load_from).  Noise: sigma/255 Gaussian
# on [0, 1] images, not clipped; validation noise from RandomState(0) per image (MambaIR's protocol).
# Scored on RGB without border crop.
_base_ = ['./_base_restoration_runtime.py']

data_root = 'data/DFWB_RGB'
sigma = 25
network = dict(type='MambaIR', upscale=1, in_chans=3, img_range=1.0, d_state=16, depths=(6, 6, 6, 6, 6, 6),
               embed_dim=180, mlp_ratio=1.2)
model = dict(type='RestorationModel', network=network, loss='charbonnier', charbonnier_eps=1e-3, scale=1,
             test_cfg=dict(tile_size=256, overlap=32))

train_dataloader = dict(
    batch_size=2, num_workers=4, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='PairedDegradationDataset', images=f'{data_root}/HQ',
                 degradation=dict(type='noise', sigma=sigma), mode='train', gt_size=128, cache=False))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='PairedDegradationDataset', images='data/CBSD68',
                 degradation=dict(type='noise', sigma=sigma), mode='val', seed=0, cache=False))
test_dataloader = val_dataloader
val_evaluator = [dict(type='RestorationPSNR', crop_border=0), dict(type='RestorationSSIM', crop_border=0)]
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.99), weight_decay=0))
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[400000, 600000, 700000, 750000], gamma=0.5)]
train_cfg = dict(max_iters=800000, val_interval=5000)
