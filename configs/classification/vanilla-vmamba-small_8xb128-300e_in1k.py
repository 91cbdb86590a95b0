# Vanilla-VMamba-S (v0) on ImageNet-1k, 300 epochs, 8 GPUs x 128 images.
# Published top-1 (official code, EMA unless noted): 83.5.
_base_ = ['./_base_/zoo_8xb128-300e_in1k.py']

model = dict(model_name='vanilla_vmamba_small', drop_path_rate=0.3)

# Official checkpoint: tools/test.py CONFIG https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmsmall_dp03_ckpt_epoch_238.pth
