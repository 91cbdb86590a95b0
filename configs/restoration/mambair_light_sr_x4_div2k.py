# MambaIR-light x4 (924K parameters) with MambaIR's recipe (options/train/mambair/train_MambaIR_lightSR_x4.yml):
# DIV2K HR images, gt 192 crops, flips/rotations, batch 16 per GPU x 2 GPUs, L1, Adam 2e-4 (0.9, 0.99),
# 500k iterations halving at 250k/400k/450k/475k.  Scored on the Y channel with crop = scale.
#
# Differences from the official pipeline: LR images are made on the fly from each GT crop with a
# MATLAB-imresize-exact bicubic (BasicSR downsamples whole images once, so crop borders differ
# slightly), and validation uses DIV2K's validation images rather than Set5/Urban100.  Point data_root at your copy of DIV2K:
#   python tools/train.py configs/restoration/mambair_light_sr_x4_div2k.py \
#       --cfg-options data_root=/data/DIV2K
_base_ = ['./_base_restoration_runtime.py']

data_root = 'data/DIV2K'
scale = 4
network = dict(type='MambaIR', upscale=scale, in_chans=3, img_range=1.0, d_state=10, depths=(6, 6, 6, 6),
               embed_dim=60, mlp_ratio=1.2, upsampler='pixelshuffledirect', resi_connection='1conv')
model = dict(type='RestorationModel', network=network, loss='l1', scale=scale,
             test_cfg=dict(tile_size=None))

train_dataloader = dict(
    batch_size=16, num_workers=8, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='PairedDegradationDataset', images=f'{data_root}/DIV2K_train_HR',
                 degradation=dict(type='bicubic', scale=scale), mode='train', gt_size=192, cache=False))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='PairedDegradationDataset', images=f'{data_root}/DIV2K_valid_HR',
                 degradation=dict(type='bicubic', scale=scale), mode='val', val_size=480, cache=False))
test_dataloader = val_dataloader
val_evaluator = [dict(type='RestorationPSNR', crop_border=scale, test_y_channel=True),
                 dict(type='RestorationSSIM', crop_border=scale, test_y_channel=True)]
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-4, betas=(0.9, 0.99), weight_decay=0))
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[250000, 400000, 450000, 475000], gamma=0.5)]
train_cfg = dict(max_iters=500000, val_interval=5000)
