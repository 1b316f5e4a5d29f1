"""Photos: the one image loader, and the real photos that ship inside installed packages.

scikit-image's sample photos and matplotlib's portrait of Grace Hopper, so that ``frankensplit
demo`` and ``frankensplit profile`` run on a fresh machine with no data. Torch-free (the edge
client loads its images here too).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image, UnidentifiedImageError

__all__ = ["BUNDLED_PHOTOS", "bundled_photos", "load_image"]

#: (package, path inside it) of the photos, in the order they are used.
BUNDLED_PHOTOS = (
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


def bundled_photos() -> list[Path]:
    """Paths of the photos shipped by installed packages (those whose package is installed)."""
    found = []
    for package, rel in BUNDLED_PHOTOS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if path.is_file():
            found.append(path)
    return found


def load_image(image: str | Path | Image.Image) -> Image.Image:
    """Open an image file (or take a PIL image) as RGB.

    Raises:
        ValueError: missing file or not a readable image.
        TypeError: neither a path nor a PIL image.
    """
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if not isinstance(image, (str, Path)):
        raise TypeError(f"image must be a path or a PIL image, got {type(image).__name__}")
    path = Path(image)
    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
