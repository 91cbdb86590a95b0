# Shared runtime settings of the zoo's restoration configs (iteration-based mmengine loops).
custom_imports = dict(imports=['vmamba_zoo.mm.restoration'], allow_failed_imports=False)
default_scope = 'mmengine'

train_cfg = dict(type='IterBasedTrainLoop', max_iters=500000, val_interval=5000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=3, save_best='PSNR',
                    rule='greater'),
)
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_level = 'INFO'
load_from = None
resume = False
