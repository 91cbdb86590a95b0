# Wave-VMamba-T (the zoo's wavelet-scan VMamba-v2) on ImageNet-1k, 300 epochs, 8 GPUs x 128 images.
# Published top-1 (official code, EMA unless noted): none (the zoo's own model; no official weights).
_base_ = ['./_base_/zoo_8xb128-300e_in1k.py']

model = dict(model_name='wave_vmamba_tiny', drop_path_rate=0.2)
