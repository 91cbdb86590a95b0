# UperNet with a Spatial-Mamba-S backbone, 160k iterations, ADE20K 512x512.
# Published (official code): mIoU 50.6 / 51.4 (single-/multi-scale) on ADE20K val.
_base_ = ['./_base_/upernet_zoo_8xb2-160k_ade20k-512x512.py']

# Official ImageNet-1k weights are on Google Drive only; download
# https://drive.google.com/file/d/1Wb3sYoWLpgmWrmHMYKwdgDwGPZaqM28O to checkpoints/spatialmamba_small.pth
# (or pass --cfg-options model.backbone.init_cfg.checkpoint=PATH).
pretrained = 'checkpoints/spatialmamba_small.pth'

model = dict(
    backbone=dict(
        model_name='spatial_mamba_small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))
