# VMamba-S[s1l20] on ImageNet-1k, 300 epochs, 8 GPUs x 128 images.
# Published top-1 (official code, EMA unless noted): 83.3.
_base_ = ['./_base_/zoo_8xb128-300e_in1k.py']

model = dict(model_name='vmamba_small_s1l20', drop_path_rate=0.3)

# Official checkpoint: tools/test.py CONFIG https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_small_0229s_ckpt_epoch_240.pth
