# VMamba-T[s2l5] on ImageNet-1k, 300 epochs, 8 GPUs x 128 images.
# Published top-1 (official code, EMA unless noted): 82.5.
_base_ = ['./_base_/zoo_8xb128-300e_in1k.py']

model = dict(model_name='vmamba_tiny_s2l5', drop_path_rate=0.2)

# Official checkpoint: tools/test.py CONFIG https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_tiny_0230_ckpt_epoch_262.pth
