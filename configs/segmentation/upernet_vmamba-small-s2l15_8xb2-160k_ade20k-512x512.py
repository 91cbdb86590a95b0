# UperNet with a VMamba-S[s2l15] backbone, 160k iterations, ADE20K 512x512.
# Published (official code): mIoU 50.6 / 51.2 (single-/multi-scale) on ADE20K val.
_base_ = ['./_base_/upernet_zoo_8xb2-160k_ade20k-512x512.py']

# VMamba-S[s2l15] (83.6 top-1); official ImageNet-1k checkpoint.
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'  # noqa

model = dict(
    backbone=dict(
        model_name='vmamba_small_s2l15',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
