# Mask R-CNN + FPN with a VMamba-T[s1l8] backbone, 1x schedule (12 epochs), COCO.
# Published (official code): box AP / mask AP 47.3 / 42.7 on COCO val2017.
_base_ = ['./_base_/mask-rcnn_zoo_fpn_1x_coco.py']

# VMamba-T[s1l8] (82.6 top-1); official ImageNet-1k checkpoint.
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'  # noqa

model = dict(
    backbone=dict(
        model_name='vmamba_tiny_s1l8',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
