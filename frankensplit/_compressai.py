"""The one module that imports compressai (STYLE.md rule 5: third-party boundaries).

Public compressai API only: ``CompressionModel`` (which resizes the CDF table buffers in
``load_state_dict``, rebuilds them in ``update`` and sums ``aux_loss``),
``update_registered_buffers`` (that resizing alone), ``EntropyBottleneck``,
the Balle 2018 ``FactorizedPrior`` image codec, and the layers ``GDN`` and ``ResidualBlock``.

For CompressAI's published pretrained image codecs (:mod:`frankensplit.codecs.compressai_zoo`):
the zoo's tables of compressai 1.2.8 (pinned in pyproject.toml) ``ZOO_ARCHITECTURES`` (zoo name ->
model class, whose ``from_state_dict`` builds it), ``ZOO_URLS`` (zoo name -> metric -> quality ->
the published checkpoint's URL, whose file name carries the first hex digits of its sha256),
``load_pretrained_state_dict`` (the zoo's key renaming, ``compressai.zoo.load_state_dict``) and
``compute_padding`` (``compressai.ops``: the centred padding to a multiple of 64 px and its
inverse, as in compressai's ``eval_model``). The two tables are module attributes of
``compressai.zoo.image`` outside its ``__all__``; they are read here and nowhere else.

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
    from compressai.models.utils import update_registered_buffers
    from compressai.ops import compute_padding
    from compressai.zoo import image as _zoo_image
    from compressai.zoo import load_state_dict as load_pretrained_state_dict

#: compressai.zoo's architectures: zoo name ("bmshj2018-hyperprior") -> CompressionModel class.
ZOO_ARCHITECTURES: dict[str, type[CompressionModel]] = dict(_zoo_image.model_architectures)
#: compressai.zoo's published checkpoints: zoo name -> metric ("mse") -> quality -> URL.
ZOO_URLS: dict[str, dict[str, dict[int, str]]] = {
    arch: {metric: dict(urls) for metric, urls in metrics.items()}
    for arch, metrics in _zoo_image.model_urls.items()
}

__all__ = [
    "GDN",
    "ZOO_ARCHITECTURES",
    "ZOO_URLS",
    "CompressionModel",
    "EntropyBottleneck",
    "FactorizedPrior",
    "ResidualBlock",
    "compute_padding",
    "load_pretrained_state_dict",
    "update_registered_buffers",
]
