"""Datasets and preprocessing."""

from frankensplit.data.datasets import IMAGE_SUFFIXES, ImageDataset, find_images, read_labels_csv
from frankensplit.data.transforms import (
    crop_transform,
    load_image,
    make_transform,
    normalize_batch,
    normalize_transform,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageDataset",
    "crop_transform",
    "find_images",
    "load_image",
    "make_transform",
    "normalize_batch",
    "normalize_transform",
    "read_labels_csv",
]
