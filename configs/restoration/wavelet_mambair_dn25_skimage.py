# A tiny wavelet MambaIR colour denoiser (sigma = 25), trained on CPU in about 15 minutes
# on real photographs shipped inside scikit-image; this config made the zoo's shipped
# weights (vmamba_zoo/assets/restoration/wavelet_mambair_dn25_skimage.safetensors, model
# card model_cards/wavelet_mambair_dn25_skimage.md).
#
#   OMP_NUM_THREADS=1 python tools/train_restoration_model.py configs/restoration/wavelet_mambair_dn25_skimage.py
#
# or, training only: python tools/train.py configs/restoration/wavelet_mambair_dn25_skimage.py
custom_imports = dict(imports=['vmamba_zoo.mm.restoration'], allow_failed_imports=False)

sigma = 25
max_iters = 1000
train_images = [
    'skimage:astronaut', 'skimage:rocket', 'skimage:hubble_deep_field', 'skimage:retina',
    'skimage:immunohistochemistry', 'skimage:motorcycle_left',
]
# held out: never seen in training ('motorcycle_right' is the stereo twin of a training image
# and is used nowhere)
heldout_images = ['skimage:chelsea', 'skimage:coffee']

network = dict(type='WaveletMambaIR', in_chans=3, shallow_dim=16, embed_dim=48, depths=(2, 2), levels=2,
               d_state=8, ssm_ratio=1.0, squeeze_factor=8)
model = dict(type='RestorationModel', network=network, loss='charbonnier', charbonnier_eps=1e-3, scale=1)

train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='PairedDegradationDataset', images=train_images,
                 degradation=dict(type='noise', sigma=sigma), mode='train', gt_size=48, repeat=200))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='PairedDegradationDataset', images=heldout_images,
                 degradation=dict(type='noise', sigma=sigma), mode='val', seed=0, val_size=192))
test_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='PairedDegradationDataset', images=heldout_images,
                 degradation=dict(type='noise', sigma=sigma), mode='val', seed=0))
# colour denoising is scored on RGB, no border crop (MambaIR's protocol)
val_evaluator = [dict(type='RestorationPSNR', crop_border=0), dict(type='RestorationSSIM', crop_border=0)]
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-3, betas=(0.9, 0.99)))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters, T_max=max_iters - 50, eta_min=1e-5),
]

default_scope = 'mmengine'
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
)
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=1),
               dist_cfg=dict(backend='gloo'))
log_level = 'INFO'
