# Serpent-like state-space U-Net (3 levels, 32/64/128 wide) for colour Gaussian denoising, sigma = 25,
# trained on DFWB like MambaIR's denoisers.  An independent design after Serpent (arXiv:2403.17902):
# there are no official weights or published numbers for this exact network.
_base_ = ['./mambair_color_dn25_dfwb.py']

network = dict(_delete_=True, type='SerpentUNet', in_chans=3, dims=(32, 64, 128), depths=(2, 2, 4), d_state=16,
               ssm_ratio=1.0)
model = dict(network=network, test_cfg=dict(tile_size=256, overlap=32, multiple=4))
train_dataloader = dict(batch_size=8)
optim_wrapper = dict(optimizer=dict(lr=3e-4))
