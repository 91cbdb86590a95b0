# Mask R-CNN + FPN with a VMamba-B[s2l15] backbone, 1x schedule (12 epochs), COCO.
# Published (official code): box AP / mask AP 49.2 / 44.1 on COCO val2017.
_base_ = ['./_base_/mask-rcnn_zoo_fpn_1x_coco.py']

# VMamba-B[s2l15] (83.9 top-1); official ImageNet-1k checkpoint.
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth'  # noqa

model = dict(
    backbone=dict(
        model_name='vmamba_base_s2l15',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
