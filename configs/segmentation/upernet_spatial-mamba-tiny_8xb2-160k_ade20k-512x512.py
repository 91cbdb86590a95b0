# UperNet with a Spatial-Mamba-T backbone, 160k iterations, ADE20K 512x512.
# Published (official code): mIoU 48.6 / 49.4 (single-/multi-scale) on ADE20K val.
_base_ = ['./_base_/upernet_zoo_8xb2-160k_ade20k-512x512.py']

# Official ImageNet-1k weights are on Google Drive only; download
# https://drive.google.com/file/d/19kXoqGSTuKKs4AHbdUSrdKZTwTWenLIW to checkpoints/spatialmamba_tiny.pth
# (or pass --cfg-options model.backbone.init_cfg.checkpoint=PATH).
pretrained = 'checkpoints/spatialmamba_tiny.pth'

model = dict(
    backbone=dict(
        model_name='spatial_mamba_tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))
