# UperNet with a EfficientVMamba-T backbone, 160k iterations, ADE20K 512x512.
# No published number for this backbone.
_base_ = ['./_base_/upernet_zoo_8xb2-160k_ade20k-512x512.py']

# EfficientVMamba-T (76.5 top-1); official checkpoint on the Hugging Face Hub.
pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Tiny/resolve/main/efficient_vmamba_tiny.ckpt'  # noqa

model = dict(
    backbone=dict(
        model_name='efficient_vmamba_tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[48, 96, 192, 384], num_classes=150),
    auxiliary_head=dict(in_channels=192, num_classes=150))
