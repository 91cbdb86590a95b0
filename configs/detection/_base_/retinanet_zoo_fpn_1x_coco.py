# RetinaNet + FPN, 1x schedule, COCO detection, with a zoo backbone.  Like
# mmdet's Swin/PVT RetinaNet configs: the backbone returns strides 8/16/32
# (out_indices 1-3) and the FPN adds P6/P7 from its input.  The official
# EfficientVMamba RetinaNet config is not public; this uses the AdamW recipe of
# the Mask R-CNN configs (lr 1e-4, wd 0.05), batch 2/GPU on 8 GPUs.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VMambaZooBackbone',
        model_name=None,  # set by the concrete config
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        with_cp=False),
    neck=dict(start_level=0, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'A_logs': dict(decay_mult=0.),
            'Ds': dict(decay_mult=0.),
        }))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
