# RetinaNet + FPN with an EfficientVMamba-T backbone, 1x schedule (12 epochs), COCO.
# Published (paper): 37.5 box AP with 13M parameters (RetinaNet 1x, COCO val2017).
_base_ = ['./_base_/retinanet_zoo_fpn_1x_coco.py']

# EfficientVMamba-T (76.5 top-1); official checkpoint on the Hugging Face Hub.
pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Tiny/resolve/main/efficient_vmamba_tiny.ckpt'  # noqa

model = dict(
    backbone=dict(
        model_name='efficient_vmamba_tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384]))
