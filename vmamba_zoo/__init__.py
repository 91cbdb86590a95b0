"""vmamba-zoo: visual Mamba (selective state space) backbones.

Importing the package registers its models with timm (``timm.create_model``).
"""
__version__ = "0.1.0"
