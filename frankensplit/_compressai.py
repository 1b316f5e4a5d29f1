"""The one module that imports compressai (STYLE.md rule 5: third-party boundaries).

Public compressai API only: ``CompressionModel`` (which resizes the CDF table buffers in
``load_state_dict``, rebuilds them in ``update`` and sums ``aux_loss``), ``EntropyBottleneck``,
the Balle 2018 ``FactorizedPrior`` image codec, and the layers ``GDN`` and ``ResidualBlock``.

compressai 1.2.8 calls ``torch.jit.script`` at import time, which torch 2.14 reports with a
FutureWarning on every start; it is harmless and hidden here so user output stays clean.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", UserWarning)
    from compressai.entropy_models import EntropyBottleneck
    from compressai.layers import GDN, ResidualBlock
    from compressai.models import CompressionModel, FactorizedPrior

__all__ = ["GDN", "CompressionModel", "EntropyBottleneck", "FactorizedPrior", "ResidualBlock"]
