# Mask R-CNN + FPN with a EfficientVMamba-B backbone, 3x schedule (36 epochs), multi-scale + crop, COCO.
# No published number for this backbone/schedule.
_base_ = ['./_base_/mask-rcnn_zoo_fpn_ms-crop-3x_coco.py']

# EfficientVMamba-B (81.8 top-1); official checkpoint on the Hugging Face Hub.
pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Base/resolve/main/efficient_vmamba_base.ckpt'  # noqa

model = dict(
    backbone=dict(
        model_name='efficient_vmamba_base',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
