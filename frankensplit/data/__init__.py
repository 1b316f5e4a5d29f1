"""Datasets and preprocessing."""

from frankensplit._lazy import lazy_exports

#: module of each public name, imported on first use (`frankensplit --help` imports no torch).
_EXPORTS = {
    "frankensplit.data.datasets": ("IMAGE_SUFFIXES", "ImageDataset", "find_images",
        "read_labels_csv"),
    "frankensplit.data.photos": ("BUNDLED_PHOTOS", "bundled_photos", "load_image"),
    "frankensplit.data.transforms": ("crop_transform", "make_transform", "normalize_batch",
        "normalize_transform"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
lazy_exports(__name__, _EXPORTS)
