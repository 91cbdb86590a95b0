# VMamba-B[s2l15] on ImageNet-1k, 300 epochs, 8 GPUs x 128 images.
# Published top-1 (official code, EMA unless noted): 83.9.
_base_ = ['./_base_/zoo_8xb128-300e_in1k.py']

model = dict(model_name='vmamba_base_s2l15', drop_path_rate=0.6)

# Official checkpoint: tools/test.py CONFIG https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth
