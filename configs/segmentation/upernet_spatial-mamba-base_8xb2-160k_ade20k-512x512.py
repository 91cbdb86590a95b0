# UperNet with a Spatial-Mamba-B backbone, 160k iterations, ADE20K 512x512.
# Published (official code): mIoU 51.8 / 52.6 (single-/multi-scale) on ADE20K val.
_base_ = ['./_base_/upernet_zoo_8xb2-160k_ade20k-512x512.py']

# Official ImageNet-1k weights are on Google Drive only; download
# https://drive.google.com/file/d/1k8dHp2QRCOqBSgAi36YkhZp_O8LqOPjM to checkpoints/spatialmamba_base.pth
# (or pass --cfg-options model.backbone.init_cfg.checkpoint=PATH).
pretrained = 'checkpoints/spatialmamba_base.pth'

model = dict(
    backbone=dict(
        model_name='spatial_mamba_base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
