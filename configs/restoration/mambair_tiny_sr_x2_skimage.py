# A tiny MambaIR x2 super-resolution run on the photographs shipped with scikit-image: a smoke test
# of the whole pipeline (CI trains it for a few iterations); it runs offline on a CPU.
#   python tools/train.py configs/restoration/mambair_tiny_sr_x2_skimage.py
_base_ = ['./_base_restoration_runtime.py']

scale = 2
network = dict(type='MambaIR', upscale=scale, in_chans=3, embed_dim=16, depths=(1, 1), d_state=4, mlp_ratio=1.0,
               upsampler='pixelshuffledirect', squeeze_factor=4)
model = dict(type='RestorationModel', network=network, loss='l1', scale=scale,
             test_cfg=dict(tile_size=64, overlap=16))

train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='PairedDegradationDataset',
                 images=['skimage:astronaut', 'skimage:rocket', 'skimage:immunohistochemistry'],
                 degradation=dict(type='bicubic', scale=scale), mode='train', gt_size=32, repeat=50))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='PairedDegradationDataset', images=['skimage:chelsea'],
                 degradation=dict(type='bicubic', scale=scale), mode='val', val_size=96))
test_dataloader = val_dataloader
val_evaluator = [dict(type='RestorationPSNR', crop_border=scale, test_y_channel=True),
                 dict(type='RestorationSSIM', crop_border=scale, test_y_channel=True)]
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3, betas=(0.9, 0.99)))
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=False, T_max=2000, eta_min=1e-5)]
train_cfg = dict(max_iters=2000, val_interval=500)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=500, max_keep_ckpts=1))
