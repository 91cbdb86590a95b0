# UperNet, 160k iterations, ADE20K 512x512 crops, with a zoo backbone.
# Inherits mmseg 1.2.2's Swin-T UperNet config (the recipe the VMamba and
# Spatial-Mamba papers use: AdamW lr 6e-5, wd 0.01, 1500-iter warm-up then
# poly decay, 2 images/GPU on 8 GPUs, auxiliary FCN head on stage 2) and
# replaces its backbone.  Concrete configs set model_name, drop_path_rate,
# init_cfg and the heads' in_channels.
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VMambaZooBackbone',
        model_name=None,  # set by the concrete config
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        with_cp=False))

# No weight decay on norms and on the SSM parameters A_logs and Ds.
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'norm': dict(decay_mult=0.),
            'A_logs': dict(decay_mult=0.),
            'Ds': dict(decay_mult=0.),
        }))
