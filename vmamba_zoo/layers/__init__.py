"""Building blocks shared by the zoo's models."""
from .linear import ChannelLinear
from .norm import LayerNorm, LayerNorm2d, make_norm
from .ss2d import SS2D, dt_bias_init_

__all__ = ["SS2D", "ChannelLinear", "LayerNorm", "LayerNorm2d", "make_norm", "dt_bias_init_"]
