# VMamba-B[s1l20] on ImageNet-1k, 300 epochs, 8 GPUs x 128 images.
# Published top-1 (official code, EMA unless noted): 83.8.
_base_ = ['./_base_/zoo_8xb128-300e_in1k.py']

model = dict(model_name='vmamba_base_s1l20', drop_path_rate=0.5)

# Official checkpoint: tools/test.py CONFIG https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_base_0229s_ckpt_epoch_225.pth
