# Mask R-CNN + FPN, 3x schedule (36 epochs, steps at 27/33) with multi-scale
# training and DETR-style random crops, COCO instance segmentation, with a zoo
# backbone.  Inherits mmdet 3.3.0's Swin-T 3x config (as the official VMamba
# and Spatial-Mamba 3x configs do) and replaces its backbone.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VMambaZooBackbone',
        model_name=None,  # set by the concrete config
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        with_cp=False))

optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'norm': dict(decay_mult=0.),
            'A_logs': dict(decay_mult=0.),
            'Ds': dict(decay_mult=0.),
        }))
