# UperNet with a VMamba-B[s2l15] backbone, 160k iterations, ADE20K 512x512.
# Published (official code): mIoU 51.0 / 51.6 (single-/multi-scale) on ADE20K val.
_base_ = ['./_base_/upernet_zoo_8xb2-160k_ade20k-512x512.py']

# VMamba-B[s2l15] (83.9 top-1); official ImageNet-1k checkpoint.
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth'  # noqa

model = dict(
    backbone=dict(
        model_name='vmamba_base_s2l15',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[128, 256, 512, 1024], num_classes=150),
    auxiliary_head=dict(in_channels=512, num_classes=150))
