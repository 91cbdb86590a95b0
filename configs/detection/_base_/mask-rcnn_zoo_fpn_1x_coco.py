# Mask R-CNN + FPN, 1x schedule (12 epochs, steps at 8/11), COCO instance
# segmentation, with a zoo backbone.  Inherits mmdet 3.3.0's Swin-T config (the
# recipe the VMamba, Spatial-Mamba and EfficientVMamba papers use: AdamW lr 1e-4,
# wd 0.05, 1000-iter linear warm-up, 2 images/GPU on 8 GPUs) and replaces its
# backbone.  Concrete configs set model_name, drop_path_rate, init_cfg and the
# FPN in_channels.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VMambaZooBackbone',
        model_name=None,  # set by the concrete config
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        with_cp=False))

# No weight decay on norms (block norms, out_norm, outnorm{i}) and on the SSM
# parameters A_logs (log of -A) and Ds (skip), as for Mamba's _no_weight_decay.
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'norm': dict(decay_mult=0.),
            'A_logs': dict(decay_mult=0.),
            'Ds': dict(decay_mult=0.),
        }))
