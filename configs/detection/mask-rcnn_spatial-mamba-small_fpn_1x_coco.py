# Mask R-CNN + FPN with a Spatial-Mamba-S backbone, 1x schedule (12 epochs), COCO.
# Published (official code): box AP / mask AP 49.2 / 44.0 on COCO val2017.
_base_ = ['./_base_/mask-rcnn_zoo_fpn_1x_coco.py']

# Official ImageNet-1k weights are on Google Drive only; download
# https://drive.google.com/file/d/1Wb3sYoWLpgmWrmHMYKwdgDwGPZaqM28O to checkpoints/spatialmamba_small.pth
# (or pass --cfg-options model.backbone.init_cfg.checkpoint=PATH).
pretrained = 'checkpoints/spatialmamba_small.pth'

model = dict(
    backbone=dict(
        model_name='spatial_mamba_small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
