# Vanilla-VMamba-T (v0) on ImageNet-1k, 300 epochs, 8 GPUs x 128 images.
# Published top-1 (official code, EMA unless noted): 82.2 (no EMA).
_base_ = ['./_base_/zoo_8xb128-300e_in1k.py']

model = dict(model_name='vanilla_vmamba_tiny', drop_path_rate=0.1)

# Official checkpoint: tools/test.py CONFIG https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmtiny_dp01_ckpt_epoch_292.pth
