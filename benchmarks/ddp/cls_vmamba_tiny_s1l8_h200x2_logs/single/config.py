auto_scale_lr = dict(base_batch_size=1024)
custom_hooks = [
    dict(momentum=0.0001, priority='ABOVE_NORMAL', type='EMAHook'),
    dict(type='RNGStateHook'),
    dict(type='TrainRecordHook'),
]
custom_imports = dict(
    allow_failed_imports=False, imports=[
        'vmamba_zoo.mm',
    ])
data_root = 'data/imagenet/'
default_hooks = dict(
    checkpoint=dict(
        by_epoch=False, interval=-1, save_last=False, type='CheckpointHook'),
    logger=dict(interval=10, type='LoggerHook'),
    param_scheduler=dict(type='ParamSchedulerHook'),
    runtime_info=dict(type='RuntimeInfoHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    timer=dict(type='IterTimerHook'))
env_cfg = dict(
    cudnn_benchmark=True,
    dist_cfg=dict(backend='nccl'),
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0))
launcher = 'none'
load_from = None
log_level = 'INFO'
log_processor = dict(by_epoch=False, window_size=50)
model = dict(
    drop_path_rate=0.2,
    label_smoothing=0.1,
    mixup=dict(
        cutmix_alpha=1.0,
        mixup_alpha=0.8,
        mode='batch',
        prob=1.0,
        switch_prob=0.5),
    model_name='vmamba_tiny_s1l8',
    num_classes=3,
    type='ZooClassifier')
optim_wrapper = dict(
    clip_grad=dict(max_norm=5.0),
    dtype='bfloat16',
    loss_scale='dynamic',
    optimizer=dict(
        betas=(
            0.9,
            0.999,
        ),
        eps=1e-08,
        lr=0.001,
        type='AdamW',
        weight_decay=0.05),
    paramwise_cfg=dict(
        bias_decay_mult=0.0,
        custom_keys=dict(A_logs=dict(decay_mult=0.0), Ds=dict(decay_mult=0.0)),
        flat_decay_mult=0.0,
        norm_decay_mult=0.0),
    type='AmpOptimWrapper')
param_scheduler = [
    dict(begin=0, by_epoch=False, end=50, start_factor=0.1, type='LinearLR'),
]
randomness = dict(seed=0)
resume = False
test_cfg = dict()
test_dataloader = dict(
    batch_size=128,
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        data_prefix=dict(img_path='val'),
        data_root='data/imagenet/',
        test_mode=True,
        transform=dict(
            crop_pct=0.875,
            input_size=224,
            interpolation='bicubic',
            is_training=False),
        type='ZooImageFolderDataset'),
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(shuffle=False, type='DefaultSampler'))
test_evaluator = dict(
    topk=(
        1,
        5,
    ), type='ZooAccuracy')
train_cfg = dict(max_iters=300, type='IterBasedTrainLoop', val_interval=301)
train_dataloader = dict(
    batch_size=128,
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        data_prefix=dict(img_path='train'),
        data_root='/tmp/ddp_cls/data',
        transform=dict(
            auto_augment='rand-m9-mstd0.5-inc1',
            color_jitter=0.4,
            input_size=224,
            interpolation='bicubic',
            is_training=True,
            re_count=1,
            re_mode='pixel',
            re_prob=0.25),
        type='ZooImageFolderDataset'),
    num_workers=12,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(shuffle=True, type='InfiniteSampler'))
val_cfg = None
val_dataloader = None
val_evaluator = None
vis_backends = [
    dict(type='LocalVisBackend'),
]
visualizer = dict(
    type='Visualizer', vis_backends=[
        dict(type='LocalVisBackend'),
    ])
work_dir = '/tmp/ddp_cls/single'
