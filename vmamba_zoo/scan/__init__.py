"""Scan patterns for the 2-D selective-scan mixer.

Each pattern is one module registered by name with
:func:`register_scan_pattern`; :class:`vmamba_zoo.layers.SS2D` takes the name
(``scan="cross"``).  See :mod:`vmamba_zoo.scan.base` for the interface.
"""
from .base import (
    ScanPattern,
    create_scan_pattern,
    get_scan_pattern_cls,
    list_scan_patterns,
    register_scan_pattern,
)
from .atrous import AtrousScan
from .bi import BiScan
from .cross import CrossScan
from .sasf import SASFScan
from .uni import UniScan
from .wavelet import WaveletScan

__all__ = [
    "ScanPattern",
    "register_scan_pattern",
    "create_scan_pattern",
    "get_scan_pattern_cls",
    "list_scan_patterns",
    "CrossScan",
    "UniScan",
    "BiScan",
    "AtrousScan",
    "SASFScan",
    "WaveletScan",
]
