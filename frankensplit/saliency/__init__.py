"""Saliency guidance: the paper's XGradCAM maps, computed once into a cache, served with the images.

``frankensplit saliency`` fills a cache (:func:`build_cache`); a training stage with
``saliency: true`` reads it through :class:`SaliencyDataset` and weighs the head distortion by
1/2 (1 + s) (FRANKENSPLIT.md, "Saliency-guided").
"""

from frankensplit.saliency.cache import (
    CACHE_FORMAT,
    CacheResult,
    SaliencyDataset,
    build_cache,
    file_rows,
    read_manifest,
    rows_sha256,
)
from frankensplit.saliency.gradcam import MAP_SIZE, TargetLayers, saliency_maps, target_layers

__all__ = [
    "CACHE_FORMAT",
    "MAP_SIZE",
    "CacheResult",
    "SaliencyDataset",
    "TargetLayers",
    "build_cache",
    "file_rows",
    "read_manifest",
    "rows_sha256",
    "saliency_maps",
    "target_layers",
]
