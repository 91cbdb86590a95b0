# EfficientVMamba-S on ImageNet-1k, 300 epochs, 8 GPUs x 128 images.
# Published top-1 (official code, EMA unless noted): 78.7.
# The official logs used 16 GPUs x 128 (lr 2e-3, wd 0.04, Mixup 0.2, drop path 0.1);
# this config keeps the common recipe at batch 1024.
_base_ = ['./_base_/zoo_8xb128-300e_in1k.py']

model = dict(model_name='efficient_vmamba_small', drop_path_rate=0.1)
