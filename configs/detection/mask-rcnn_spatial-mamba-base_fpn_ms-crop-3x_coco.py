# Mask R-CNN + FPN with a Spatial-Mamba-B backbone, 3x schedule (36 epochs), multi-scale + crop, COCO.
# No published number for this backbone/schedule.
_base_ = ['./_base_/mask-rcnn_zoo_fpn_ms-crop-3x_coco.py']

# Official ImageNet-1k weights are on Google Drive only; download
# https://drive.google.com/file/d/1k8dHp2QRCOqBSgAi36YkhZp_O8LqOPjM to checkpoints/spatialmamba_base.pth
# (or pass --cfg-options model.backbone.init_cfg.checkpoint=PATH).
pretrained = 'checkpoints/spatialmamba_base.pth'

model = dict(
    backbone=dict(
        model_name='spatial_mamba_base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
