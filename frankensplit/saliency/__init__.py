"""Saliency guidance: the paper's XGradCAM maps, computed once into a cache, served with the images.

``frankensplit saliency`` fills a cache (:func:`build_cache`); a training stage with
``saliency: true`` reads it through :class:`SaliencyDataset` and weighs the head distortion by
1/2 (1 + s) (FRANKENSPLIT.md, "Saliency-guided").
"""

from frankensplit._lazy import lazy_exports

#: module of each public name, imported on first use (`frankensplit --help` imports no torch).
_EXPORTS = {
    "frankensplit.saliency.cache": ("CACHE_FORMAT", "CacheResult", "SaliencyDataset", "build_cache",
        "file_rows", "read_manifest", "rows_sha256"),
    "frankensplit.saliency.gradcam": ("MAP_SIZE", "TargetLayers", "saliency_maps", "target_layers"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
lazy_exports(__name__, _EXPORTS)
