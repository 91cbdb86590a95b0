# ImageNet-1k classification, 300 epochs: the Swin/VMamba recipe (DeiT
# augmentation) on 8 GPUs x 128 images.  Concrete configs set
# model.model_name and model.drop_path_rate.
#   AdamW, lr 1e-3 at batch 1024 (5e-4 x 1024/512), wd 0.05, 20 warm-up epochs,
#   cosine to 1e-5, gradient clipping 5, label smoothing 0.1, Mixup 0.8 /
#   CutMix 1.0, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25,
#   EMA 0.9999 (validation uses the EMA weights), bicubic 224 crops,
#   evaluation at crop_pct 0.875.  The official runs used AMP: add --amp (with
#   --amp-dtype bfloat16 the VSS blocks run the zoo's fused GPU path).
# Weight decay: none on norms, biases and other 1-D parameters (as the official
# trainers), nor on the SSM's A_logs (the official VMamba trainer decays it;
# mamba_ssm and the zoo's no_weight_decay() do not).
# Data: ImageNet as <data_root>/{train,val}/<wnid>/<image>.JPEG.
custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

data_root = 'data/imagenet/'
train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ZooImageFolderDataset',
        data_root=data_root,
        data_prefix=dict(img_path='train'),
        transform=dict(
            input_size=224, is_training=True, color_jitter=0.4, auto_augment='rand-m9-mstd0.5-inc1',
            interpolation='bicubic', re_prob=0.25, re_mode='pixel', re_count=1)))
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ZooImageFolderDataset',
        data_root=data_root,
        data_prefix=dict(img_path='val'),
        test_mode=True,
        transform=dict(input_size=224, is_training=False, interpolation='bicubic', crop_pct=0.875)))
test_dataloader = val_dataloader
val_evaluator = dict(type='ZooAccuracy', topk=(1, 5))
test_evaluator = val_evaluator

model = dict(
    type='ZooClassifier',
    model_name=None,  # set by the concrete config
    num_classes=1000,
    drop_path_rate=0.2,
    label_smoothing=0.1,
    mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch'))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={'A_logs': dict(decay_mult=0.0), 'Ds': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=280, eta_min=1e-5, by_epoch=True, begin=20, end=300,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(base_batch_size=1024)

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best='accuracy/top1'),
    sampler_seed=dict(type='DistSamplerSeedHook'))
# RNGStateHook: checkpoints keep the generator states, so --resume repeats the
# uninterrupted run's Mixup/CutMix, RandAugment, erasing and drop-path draws.
custom_hooks = [dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'), dict(type='RNGStateHook')]

env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
log_processor = dict(window_size=50, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
