"""Golden packets: the bytes every shipped zoo model writes for two bundled photos.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/golden_packets.py [--write] [--threads N]

For each entry of ``frankensplit/zoo/index.json`` with shipped weights, the edge path of
``frankensplit encode`` runs in process (the zoo model, the model's eval transform, one image at a
time through the edge's ``g_a`` and ``pack``, the calls the command makes) on the first two photos
that ship with installed packages (scikit-image's). A fixed-rate model writes one packet per photo,
stored as ``tests/golden/packets/<model>/<photo stem>.fsb`` and indexed (sha256, length) in
``tests/golden/packets.json`` under the photo's name. A variable-rate model (``FrankenSplit.rates``)
writes one packet per photo and rate: g_a runs once per photo and ``edge.pack`` codes its latent
at every rate index r, which is what ``frankensplit encode --rate r`` writes (``edge.encode(x, r)``
is the same two calls); the files are ``<photo stem>_r<r>.fsb``, the index keys
``<photo>@r<r>`` (`packet_key`, `packet_file`). ``--write`` rewrites both; without it the packets
are compared (`compare`) and the tool exits 1 on a difference that float rounding cannot explain,
or on a recorded set of packets other than the model's photos and rates (`coverage`).
``tests/test_golden_packets.py`` runs the same comparison at 1 and 2 torch threads.

Why not byte equality: the encoder's floats depend on the thread count and the CPU's vector
instructions (a sum in another order), so a latent value that sits on a rounding boundary may
round either way. What is rounded is ``y - median`` for a fixed-rate model and
``y * gain[r] - median[r]`` (that rate's gain and medians, `rounded`) for a variable-rate one.
The Entropic Student encoder has one such value in 150,528 on these photos (-1.5000002 at 1
thread, -1.4999998 at 2). Such a packet is equally valid: decoding reads the stored integer CDF
tables and returns exactly the symbols sent. `compare` therefore decodes both packets with the
model's own tables and allows a difference only where the current encoder's value is at a rounding
tie, off by exactly one symbol (one quantisation step of the decoded latent: 1, or the rate's
inverse gain), and rare; anything else (wire format, header and its rate, CDF tables, gains,
preprocessing, weights) still fails.
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
#: The index; the packet files lie in ``packets/`` beside it (`packets_dir`). A module attribute,
#: so a test can record into a folder of its own.
GOLDEN = REPO / "tests" / "golden" / "packets.json"
PHOTOS = 2
#: Between a photo's name and a rate index in an index key: ``chelsea.png@r3``.
RATE_MARK = "@r"
#: A value this close to a half-integer (after centring on the median) is a rounding tie: float
#: noise between thread counts and CPUs is about 1e-6 here (measured: at most 3.3e-6 on y; a
#: variable-rate model's gain, at most 4.6 in training, scales it).
TIE_TOLERANCE = 1e-4
#: At most one tie flip per this many symbols (and at least one per model is allowed).
SYMBOLS_PER_TIE = 100_000


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def packets_dir() -> Path:
    """The folder of the packet files: ``packets/`` beside `GOLDEN`."""
    return GOLDEN.parent / "packets"


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


def rate_indices(rates: Sequence[float] | None) -> list[int | None]:
    """The rate indices a model codes at: ``[None]`` for one fixed rate (``rates`` None), else
    ``0 .. len(rates) - 1``."""
    return [None] if rates is None else list(range(len(rates)))


def packet_key(photo: str, rate: int | None) -> str:
    """The index key of one packet: the photo's name, and for a variable-rate model its rate
    (``chelsea.png``, ``chelsea.png@r3``)."""
    return photo if rate is None else f"{photo}{RATE_MARK}{rate}"


def packet_keys(photo_names: Sequence[str], rates: Sequence[float] | None) -> list[str]:
    """Every key a model with ``rates`` (None: fixed rate) records for the photos."""
    return [packet_key(p, r) for p in photo_names for r in rate_indices(rates)]


def packet_file(model_id: str, key: str) -> Path:
    """The file of one packet: ``<model>/<photo stem>.fsb`` (``_r<rate>`` before ``.fsb`` for a
    variable-rate model's)."""
    photo, mark, rate = key.partition(RATE_MARK)
    return packets_dir() / model_id / f"{Path(photo).stem}{f'_r{rate}' if mark else ''}.fsb"


@dataclass(frozen=True)
class Encoded:
    """One packet and the float latent ``y`` (C, h, w) it was coded from (g_a's output, before a
    variable-rate model's gain: one ``y`` for every rate of a photo)."""

    packet: bytes
    y: np.ndarray


def encode(model: FrankenSplit, images: Sequence[Path]) -> dict[str, Encoded]:
    """``{packet key: Encoded}``: what ``frankensplit encode --model M [--rate R] PHOTO`` writes.

    The same calls as the command (`frankensplit.commands.encode`): the model's eval transform,
    one image per batch, ``model.edge.g_a`` once, then ``model.edge.pack`` at each rate (a
    fixed-rate model: once, without a rate). ``edge.encode(x, rate)`` is these two calls, so the
    bytes are also what the edge writes through it.
    """
    import torch

    from frankensplit.data import load_image, make_transform

    transform = make_transform(model.data_config, "eval")
    out = {}
    for path in images:
        x = transform(load_image(path)).unsqueeze(0)  # (1, 3, 224, 224)
        with torch.no_grad():
            y = model.edge.g_a(x)  # (1, C, h, w)
        for rate in rate_indices(model.rates):
            (packet,) = model.edge.pack(y, rate)
            out[packet_key(path.name, rate)] = Encoded(packet, y[0].numpy())
    return out


def recorded_keys(model_id: str) -> list[str]:
    """The keys the index holds for one model (empty: none recorded)."""
    return sorted(json.loads(GOLDEN.read_text())["packets"].get(model_id, {}))


def recorded_packet(model_id: str, key: str) -> bytes:
    """The golden packet of one model and key (`packet_key`), checked against the index."""
    index = json.loads(GOLDEN.read_text())["packets"][model_id][key]
    path = packet_file(model_id, key)
    data = path.read_bytes()
    if _sha256(data) != index["sha256"] or len(data) != index["bytes"]:
        raise ValueError(f"{path} does not match {GOLDEN.name} for {key}")
    return data


def rounded(model: FrankenSplit, y: np.ndarray, rate: int | None = None) -> np.ndarray:
    """The values (C, h, w) the entropy coder rounds into symbols for latent ``y`` (C, h, w):
    ``y - median`` (fixed rate), ``y * gain[rate] - median[rate]`` (variable rate), in float32
    with the ops of ``compress`` (the gain's product first, then compressai's median subtraction).
    """
    import torch

    t = torch.from_numpy(y)
    if rate is None:
        return (t - model.entropy.medians().view(-1, 1, 1)).numpy()
    gain, _ = model.entropy.gains(rate)
    return (t * gain.view(-1, 1, 1) - model.entropy.medians(rate).view(-1, 1, 1)).numpy()


def _step(model: FrankenSplit, rate: int | None) -> np.ndarray:
    """One symbol in the decoded latent, per channel (C, 1, 1): 1, or the rate's inverse gain."""
    import numpy as np

    if rate is None:
        return np.ones((model.entropy.channels, 1, 1), dtype=np.float32)
    return model.entropy.gains(rate)[1].numpy().reshape(-1, 1, 1)


def symbol_flips(model: FrankenSplit, reference: bytes, packet: bytes,
                 y: np.ndarray) -> tuple[int, list[str]]:
    """How many symbols of ``packet`` differ from ``reference`` (both for ``model``), and what
    differs beyond rounding ties.

    Both packets must have the same header (model id, latent shape, rate index); their symbols,
    decoded exactly with the model's stored tables (at that rate), may differ only by one, where
    the value rounded for the latent ``y`` (C, h, w) that ``packet`` was coded from (`rounded`,
    at the header's rate) is within `TIE_TOLERANCE` of a half-integer.
    """
    import numpy as np

    from frankensplit import bitstream

    if reference == packet:
        return 0, []
    old = bitstream.unpack(reference)
    try:
        new = bitstream.unpack(packet)
        if (old.model_id, old.shape, old.rate) != (new.model_id, new.shape, new.rate):
            return 0, [(f"header {new.model_id} {new.shape} rate {new.rate}, expected "
                        f"{old.model_id} {old.shape} rate {old.rate}")]
        y_new = model.server.decode_latent([packet])[0].numpy()
    except bitstream.BitstreamError as e:
        return 0, [f"the packet does not decode: {e}"]
    y_old = model.server.decode_latent([reference])[0].numpy()
    off = y_old != y_new
    step = np.broadcast_to(_step(model, new.rate), y_new.shape)
    if not np.allclose(np.abs(y_old - y_new)[off], step[off], atol=1e-4):
        return int(off.sum()), ["symbols differ by more than 1"]
    centred = rounded(model, y, new.rate)[off]
    distance = np.abs(np.abs(centred - np.floor(centred)) - 0.5)
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
    """What differs between the packets just written (keyed as `encode` keys them) and the golden
    ones beyond rounding ties (`symbol_flips` per packet, `too_many_flips` over the model).
    Empty: the packets match."""
    problems, flips, symbols = [], 0, 0
    for key, now in written.items():
        n, found = symbol_flips(model, recorded_packet(model.model_id, key), now.packet, now.y)
        problems += [f"{key}: {p}" for p in found]
        flips, symbols = flips + n, symbols + now.y.size
    return problems + too_many_flips(flips, symbols)


def coverage(model_id: str, written: dict[str, Encoded]) -> list[str]:
    """A problem when the index holds other packets for ``model_id`` than ``written`` (a photo
    or a rate missing or extra)."""
    recorded, now = set(recorded_keys(model_id)), set(written)
    if recorded == now:
        return []
    return [(f"recorded packets {sorted(recorded - now)} are not written, written packets "
             f"{sorted(now - recorded)} are not recorded")]


def index(images: Sequence[Path], packets: dict[str, dict[str, Encoded]]) -> dict[str, Any]:
    """The index's content: the photos' checksums and every model's packets (sha256, bytes)."""
    return {
        "command": "python tools/golden_packets.py --write",
        "photos": {p.name: _sha256(p.read_bytes()) for p in images},
        "packets": {m: {key: {"sha256": _sha256(e.packet), "bytes": len(e.packet)}
                        for key, e in written.items()} for m, written in packets.items()},
    }


def measure(model_ids: Sequence[str] | None = None
            ) -> tuple[dict[str, Any], dict[str, dict[str, Encoded]]]:
    """The index's content and the packets of the shipped models (or of ``model_ids``)."""
    images = photos()
    ids = shipped_models() if model_ids is None else list(model_ids)
    packets = {m: encode(load(m), images) for m in ids}
    return index(images, packets), packets


def write(content: dict[str, Any], packets: dict[str, dict[str, Encoded]]) -> None:
    """Rewrite the index and the packet files (every old packet file is removed first)."""
    shutil.rmtree(packets_dir(), ignore_errors=True)
    for model_id, written in packets.items():
        (packets_dir() / model_id).mkdir(parents=True)
        for key, encoded in written.items():
            packet_file(model_id, key).write_bytes(encoded.packet)
    GOLDEN.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    from frankensplit.threads import torch_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {GOLDEN.relative_to(REPO)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    with torch_threads(args.threads):
        if args.write:
            write(*measure())
            print(f"wrote {GOLDEN} and {packets_dir()}")
            return 0
        images, failed = photos(), 0
        for model_id in shipped_models():
            model = load(model_id)
            written = encode(model, images)
            problems = coverage(model_id, written)
            for problem in problems or compare(model, written):
                print(f"{model_id}: {problem}", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
