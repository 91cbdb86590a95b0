# Mask R-CNN + FPN with a EfficientVMamba-T backbone, 1x schedule (12 epochs), COCO.
# No published number for this backbone/schedule.
_base_ = ['./_base_/mask-rcnn_zoo_fpn_1x_coco.py']

# EfficientVMamba-T (76.5 top-1); official checkpoint on the Hugging Face Hub.
pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Tiny/resolve/main/efficient_vmamba_tiny.ckpt'  # noqa

model = dict(
    backbone=dict(
        model_name='efficient_vmamba_tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[48, 96, 192, 384]))
