#!/usr/bin/env python
"""Convert an official checkpoint into the zoo's safetensors format.

The file is read with ``torch.load(weights_only=True)`` (a pickled yacs training
config is read as a plain dict), remapped by the model family's
``checkpoint_filter_fn``, checked by a strict load into the model and written as
``.safetensors``::

    python tools/convert_checkpoint.py vssm1_tiny_0230s_ckpt_epoch_264.pth \\
        vmamba_tiny_s1l8.in1k.safetensors --model vmamba_tiny_s1l8

Load the result with ``timm.create_model("vmamba_tiny_s1l8", pretrained=True,
pretrained_cfg_overlay=dict(file="vmamba_tiny_s1l8.in1k.safetensors"))``.
Same as ``vmamba-zoo convert``.
"""
from __future__ import annotations

import sys
from typing import List, Optional

from vmamba_zoo.cli import main as cli_main


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    return cli_main(["convert", *argv])


if __name__ == "__main__":
    sys.exit(main())
