"""The one module that imports compressai (STYLE.md rule 5: third-party boundaries).

compressai 1.2.8 calls ``torch.jit.script`` at import time, which torch 2.14 reports with a
FutureWarning on every start; it is harmless and hidden here so user output stays clean.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", UserWarning)
    from compressai.entropy_models import EntropyBottleneck
    from compressai.layers import GDN
    from compressai.models.utils import conv, deconv, update_registered_buffers

__all__ = ["GDN", "EntropyBottleneck", "conv", "deconv", "update_registered_buffers"]
