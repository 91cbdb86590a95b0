"""Test-session setup.

Without CUDA, Triton kernels run through Triton's interpreter (CPU tensors);
the variable must be set before any kernel module is imported.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
