"""Real photos that ship inside installed packages: the demo's and the profile's default input.

scikit-image's sample photos and matplotlib's portrait of Grace Hopper, so that ``frankensplit
demo`` and ``frankensplit profile`` run on a fresh machine with no data. Torch-free.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["BUNDLED_PHOTOS", "bundled_photos"]

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
