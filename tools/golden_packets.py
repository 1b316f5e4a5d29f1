"""Golden packets: the bytes every shipped zoo model writes for two bundled photos.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/golden_packets.py [--write] [--threads N]

For each entry of ``frankensplit/zoo/index.json`` with shipped weights, the ``encode`` command
runs in process (``frankensplit encode --model M PHOTO... --out TMP``: the zoo model, the
teacher's eval transform, ``edge.encode``) on the first two photos that ship with installed
packages (scikit-image's), and the sha256 and length of each ``.fsb`` packet are collected.
Without ``--write`` it prints them and exits 1 if they differ from ``tests/golden/packets.json``;
``--write`` rewrites that file. ``tests/test_golden_packets.py`` checks it on every test run.
Regenerate only on purpose (a deliberate change of the wire format or of shipped weights) and
say so in the commit. Not a library module: a maintainer's tool.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "packets.json"
PHOTOS = 2


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shipped_models() -> list[str]:
    """Ids of the zoo entries that ship weights, in index order."""
    from frankensplit.models.zoo_index import MODELS

    return [m for m in MODELS.names() if MODELS.get(m).trained]


def photos() -> list[Path]:
    """The photos the packets are written for: the first two bundled ones."""
    from frankensplit.data import bundled_photos

    found = bundled_photos()[:PHOTOS]
    if len(found) < PHOTOS:
        raise ValueError(f"need {PHOTOS} bundled photos (scikit-image), found {len(found)}")
    return found


def packets(model_id: str, images: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """``{photo name: {"sha256", "bytes"}}`` of the packets ``frankensplit encode`` writes."""
    from frankensplit.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["encode", "--model", model_id, "--out", tmp, *map(str, images)])
        if code != 0:
            raise RuntimeError(f"frankensplit encode --model {model_id} exited {code}")
        out = {}
        for path in images:
            data = (Path(tmp) / f"{path.stem}.fsb").read_bytes()
            out[path.name] = {"sha256": _sha256(data), "bytes": len(data)}
    return out


def measure(model_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """The golden file's content: the photos' checksums and every shipped model's packets."""
    images = photos()
    ids = shipped_models() if model_ids is None else list(model_ids)
    return {
        "command": "python tools/golden_packets.py --write",
        "photos": {p.name: _sha256(p.read_bytes()) for p in images},
        "packets": {m: packets(m, images) for m in ids},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {GOLDEN.relative_to(REPO)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    measured = measure()
    text = json.dumps(measured, indent=2, sort_keys=True) + "\n"
    if args.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
        print(f"wrote {GOLDEN}")
        return 0
    print(text, end="")
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else None
    if recorded != measured:
        print(f"differs from {GOLDEN}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
