"""Selective-scan kernels of vmamba-zoo, imported as ``vmamba_zoo_kernels``.

The source folder is the repository's top-level ``kernels/``; it is installed
under the distinct name ``vmamba_zoo_kernels`` because ``kernels`` is the
import name of Hugging Face's kernel hub, which transformers imports.
"""
from .reference import selective_scan_ref
from .routes import selective_scan_routes
from .selective_scan import BACKENDS, selective_scan

__all__ = ["selective_scan", "selective_scan_ref", "selective_scan_routes", "BACKENDS"]
