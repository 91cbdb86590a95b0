# Mask R-CNN + FPN with a Spatial-Mamba-T backbone, 3x schedule (36 epochs), multi-scale + crop, COCO.
# Published (official code): box AP / mask AP 49.3 / 43.6 on COCO val2017.
_base_ = ['./_base_/mask-rcnn_zoo_fpn_ms-crop-3x_coco.py']

# Official ImageNet-1k weights are on Google Drive only; download
# https://drive.google.com/file/d/19kXoqGSTuKKs4AHbdUSrdKZTwTWenLIW to checkpoints/spatialmamba_tiny.pth
# (or pass --cfg-options model.backbone.init_cfg.checkpoint=PATH).
pretrained = 'checkpoints/spatialmamba_tiny.pth'

model = dict(
    backbone=dict(
        model_name='spatial_mamba_tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
