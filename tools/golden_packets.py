"""Golden packets: the bytes every shipped zoo model writes for two bundled photos.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/golden_packets.py [--write] [--threads N]

For each entry of ``frankensplit/zoo/index.json`` with shipped weights, the edge path of
``frankensplit encode`` runs in process (the zoo model, the teacher's eval transform, one image at
a time through ``edge.encode``) on the first two photos that ship with installed packages
(scikit-image's). The packets are stored under ``tests/golden/packets/<model>/<photo>.fsb`` and
indexed (sha256, length) in ``tests/golden/packets.json``. ``--write`` rewrites both; without it the
packets are compared (`compare`) and the tool exits 1 on a difference that float rounding cannot
explain. ``tests/test_golden_packets.py`` runs the same comparison at 1 and 2 torch threads.

Why not byte equality: the encoder's floats depend on the thread count and the CPU's vector
instructions (a sum in another order), so a latent value that sits on a rounding boundary
(``y - median`` within float noise of a half-integer) may round either way. The Entropic Student
encoder has one such value in 150,528 on these photos (-1.5000002 at 1 thread, -1.4999998 at 2).
Such a packet is equally valid: decoding reads the stored integer CDF tables and returns exactly the
symbols sent. `compare` therefore decodes both packets with the model's own tables and allows a
difference only where the current encoder's value is at a rounding tie, off by exactly 1, and rare;
anything else (wire format, header, CDF tables, preprocessing, weights) still fails.
Regenerate only on purpose (a deliberate change of the wire format or of shipped weights) and say
so in the commit. Not a library module: a maintainer's tool.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from frankensplit.models.split import FrankenSplit

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "packets.json"
PACKETS = GOLDEN.parent / "packets"
PHOTOS = 2
#: A value this close to a half-integer (after centring on the median) is a rounding tie: float
#: noise between thread counts and CPUs is about 1e-6 here (measured: at most 3.3e-6 on y).
TIE_TOLERANCE = 1e-4
#: At most one tie flip per this many symbols (and at least one per model is allowed).
SYMBOLS_PER_TIE = 100_000


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


def load(model_id: str) -> FrankenSplit:
    """The shipped zoo model, in eval mode with its CDF tables (what ``encode`` loads)."""
    from frankensplit.models.zoo import create_model

    return create_model(model_id)


@dataclass(frozen=True)
class Encoded:
    """One photo's packet and the float latent ``y`` (C, h, w) it was coded from."""

    packet: bytes
    y: np.ndarray


def encode(model: FrankenSplit, images: Sequence[Path]) -> dict[str, Encoded]:
    """``{photo name: Encoded}``: what ``frankensplit encode --model M PHOTO`` writes per photo.

    The same calls as the command (`frankensplit.commands.encode`): the teacher's eval transform,
    one image per batch, ``model.edge.encode``; g_a runs a second time for ``y`` (same process,
    same thread count: the same floats).
    """
    import torch

    from frankensplit.data import load_image, make_transform

    transform = make_transform(model.data_config, "eval")
    out = {}
    for path in images:
        x = transform(load_image(path)).unsqueeze(0)  # (1, 3, 224, 224)
        (packet,) = model.edge.encode(x)
        with torch.no_grad():
            y = model.g_a(x)[0].numpy()  # (C, h, w)
        out[path.name] = Encoded(packet, y)
    return out


def recorded_packet(model_id: str, photo: str) -> bytes:
    """The golden packet of one model and photo, checked against the index's sha256."""
    index = json.loads(GOLDEN.read_text())["packets"][model_id][photo]
    data = (PACKETS / model_id / f"{Path(photo).stem}.fsb").read_bytes()
    if _sha256(data) != index["sha256"] or len(data) != index["bytes"]:
        raise ValueError(f"{PACKETS / model_id} does not match {GOLDEN.name} for {photo}")
    return data


def symbol_flips(model: FrankenSplit, reference: bytes, packet: bytes,
                 y: np.ndarray) -> tuple[int, list[str]]:
    """How many symbols of ``packet`` differ from ``reference`` (both for ``model``), and what
    differs beyond rounding ties.

    Both packets must have the same header (model id, latent shape); their symbols, decoded
    exactly with the model's stored tables, may differ only by 1, where the latent ``y``
    (C, h, w) that ``packet`` was coded from is within `TIE_TOLERANCE` of a half-integer after
    centring on the medians.
    """
    import numpy as np

    from frankensplit import bitstream

    if reference == packet:
        return 0, []
    old, new = bitstream.unpack(reference), bitstream.unpack(packet)
    if (old.model_id, old.shape) != (new.model_id, new.shape):
        return 0, [f"header {new.model_id} {new.shape}, expected {old.model_id} {old.shape}"]
    y_old, y_new = (model.server.decode_latent([p])[0].numpy() for p in (reference, packet))
    off = y_old != y_new
    centred = (y - model.entropy.medians().numpy().reshape(-1, 1, 1))[off]
    distance = np.abs(np.abs(centred - np.floor(centred)) - 0.5)
    if not np.allclose(np.abs(y_old - y_new)[off], 1, atol=1e-4):
        return int(off.sum()), ["symbols differ by more than 1"]
    if np.any(distance >= TIE_TOLERANCE):
        return int(off.sum()), [(f"{int(off.sum())} symbols differ, some away from a rounding tie "
                                f"(centred values {centred[distance >= TIE_TOLERANCE][:4]})")]
    return int(off.sum()), []


def too_many_flips(flips: int, symbols: int) -> list[str]:
    """A problem when more symbols flipped at ties than float rounding explains: at most one per
    `SYMBOLS_PER_TIE` symbols (at least one)."""
    if flips > max(1, symbols // SYMBOLS_PER_TIE):
        return [(f"{flips} of {symbols} symbols flipped at rounding ties: more than float "
                "rounding explains")]
    return []


def compare(model: FrankenSplit, written: dict[str, Encoded]) -> list[str]:
    """What differs between the packets just written and the golden ones beyond rounding ties
    (`symbol_flips` per photo, `too_many_flips` over the model). Empty: the packets match."""
    problems, flips, symbols = [], 0, 0
    for photo, now in written.items():
        n, found = symbol_flips(model, recorded_packet(model.model_id, photo), now.packet, now.y)
        problems += [f"{photo}: {p}" for p in found]
        flips, symbols = flips + n, symbols + now.y.size
    return problems + too_many_flips(flips, symbols)


def measure(model_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """The index's content and the packets: the photos' checksums and every model's packets."""
    images = photos()
    ids = shipped_models() if model_ids is None else list(model_ids)
    packets = {m: encode(load(m), images) for m in ids}
    return {
        "command": "python tools/golden_packets.py --write",
        "photos": {p.name: _sha256(p.read_bytes()) for p in images},
        "packets": {m: {name: {"sha256": _sha256(e.packet), "bytes": len(e.packet)}
                        for name, e in written.items()} for m, written in packets.items()},
    }, packets


def write(index: dict[str, Any], packets: dict[str, dict[str, Encoded]]) -> None:
    """Rewrite the index and the packet files (every old packet file is removed first)."""
    shutil.rmtree(PACKETS, ignore_errors=True)
    for model_id, written in packets.items():
        (PACKETS / model_id).mkdir(parents=True)
        for name, encoded in written.items():
            (PACKETS / model_id / f"{Path(name).stem}.fsb").write_bytes(encoded.packet)
    GOLDEN.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    from frankensplit.threads import torch_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {GOLDEN.relative_to(REPO)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    with torch_threads(args.threads):
        if args.write:
            write(*measure())
            print(f"wrote {GOLDEN} and {PACKETS}")
            return 0
        images, failed = photos(), 0
        for model_id in shipped_models():
            model = load(model_id)
            for problem in compare(model, encode(model, images)):
                print(f"{model_id}: {problem}", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
