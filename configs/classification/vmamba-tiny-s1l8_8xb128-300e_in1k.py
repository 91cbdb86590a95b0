# VMamba-T[s1l8] on ImageNet-1k, 300 epochs, 8 GPUs x 128 images.
# Published top-1 (official code, EMA unless noted): 82.6.
_base_ = ['./_base_/zoo_8xb128-300e_in1k.py']

model = dict(model_name='vmamba_tiny_s1l8', drop_path_rate=0.2)

# Official checkpoint: tools/test.py CONFIG https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth
