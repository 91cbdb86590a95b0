# Mask R-CNN + FPN with a VMamba-S[s2l15] backbone, 1x schedule (12 epochs), COCO.
# Published (official code): box AP / mask AP 48.7 / 43.7 on COCO val2017.
_base_ = ['./_base_/mask-rcnn_zoo_fpn_1x_coco.py']

# VMamba-S[s2l15] (83.6 top-1); official ImageNet-1k checkpoint.
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'  # noqa

model = dict(
    backbone=dict(
        model_name='vmamba_small_s2l15',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
