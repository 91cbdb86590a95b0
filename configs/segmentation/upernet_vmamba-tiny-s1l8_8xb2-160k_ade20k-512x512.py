# UperNet with a VMamba-T[s1l8] backbone, 160k iterations, ADE20K 512x512.
# Published (official code): mIoU 47.9 / 48.8 (single-/multi-scale) on ADE20K val.
_base_ = ['./_base_/upernet_zoo_8xb2-160k_ade20k-512x512.py']

# VMamba-T[s1l8] (82.6 top-1); official ImageNet-1k checkpoint.
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'  # noqa

model = dict(
    backbone=dict(
        model_name='vmamba_tiny_s1l8',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
