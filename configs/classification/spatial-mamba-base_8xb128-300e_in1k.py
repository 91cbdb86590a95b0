# Spatial-Mamba-B on ImageNet-1k, 300 epochs, 8 GPUs x 128 images.
# Published top-1 (official code, EMA unless noted): 85.3.
# The official runs add MESA self-distillation, which is not implemented here.
_base_ = ['./_base_/zoo_8xb128-300e_in1k.py']

model = dict(model_name='spatial_mamba_base', drop_path_rate=0.5)
