# Vanilla-VMamba-B (v0) on ImageNet-1k, 300 epochs, 8 GPUs x 128 images.
# Published top-1 (official code, EMA unless noted): 83.7.
_base_ = ['./_base_/zoo_8xb128-300e_in1k.py']

model = dict(model_name='vanilla_vmamba_base', drop_path_rate=0.6)

# Official checkpoint: tools/test.py CONFIG https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmbase_dp06_ckpt_epoch_241.pth
