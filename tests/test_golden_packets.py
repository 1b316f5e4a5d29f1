"""Golden packets: every shipped zoo model writes the golden packets for two bundled photos, at 1
and 2 torch threads.

``tests/golden/packets/<model>/<photo>.fsb`` holds the packets ``frankensplit encode`` wrote when
they were recorded (``tests/golden/packets.json`` indexes them). Any change of what a model writes
(wire format, header, quantisation, CDF tables, preprocessing, weights) fails here; a symbol that
flips at a rounding tie between thread counts or CPUs does not (see ``tools/golden_packets.py``,
`compare`). ``tests/test_portability.py`` runs this file again under
``ATEN_CPU_CAPABILITY=default``. Regenerate only on purpose:
``HF_HUB_OFFLINE=1 .venv/bin/python tools/golden_packets.py --write``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from frankensplit import bitstream
from frankensplit.threads import torch_threads
from tests.conftest import GOLDEN_TOOL

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "packets.json"
REGENERATE = "`HF_HUB_OFFLINE=1 .venv/bin/python tools/golden_packets.py --write`"


TOOL = GOLDEN_TOOL
RECORDED = json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    """The two bundled photos, the same files the golden packets were written for."""
    found = TOOL.photos()
    sums = {p.name: TOOL._sha256(p.read_bytes()) for p in found}
    if sums != RECORDED["photos"]:
        pytest.fail(f"the bundled photos changed (installed scikit-image?): {sums} != "
                    f"{RECORDED['photos']}; the packets cannot be compared, regenerate with "
                    f"{REGENERATE} only if the photos alone changed")
    return found


def test_every_shipped_model_has_golden_packets() -> None:
    assert sorted(RECORDED["packets"]) == sorted(TOOL.shipped_models()), (
        f"the golden file does not cover exactly the shipped models: {REGENERATE}")
    for model_id, photos in RECORDED["packets"].items():
        for photo in photos:
            TOOL.recorded_packet(model_id, photo)  # stored, and the bytes the index names


@pytest.mark.parametrize("model_id", sorted(RECORDED["packets"]))
def test_packets_match_the_golden_packets(model_id: str, photos: list[Path]) -> None:
    model = TOOL.load(model_id)
    for threads in (1, 2):
        with torch_threads(threads):
            problems = TOOL.compare(model, TOOL.encode(model, photos))
        assert not problems, (f"{model_id} at {threads} threads writes other packets: {problems}; "
                              f"if that is intended, {REGENERATE}")


def test_compare_refuses_a_changed_symbol(photos: list[Path]) -> None:
    """A symbol moved by 1 away from a rounding tie (what a wrong median or weight does) fails,
    and the comparison of the unchanged packets passes: the tolerance is only for ties."""
    model = TOOL.load("fs-lite0-l4")
    written = TOOL.encode(model, photos[:1])
    (name, encoded), = written.items()
    assert TOOL.compare(model, written) == []
    centred = encoded.y - model.entropy.medians().numpy().reshape(-1, 1, 1)
    c, i, j = np.unravel_index(np.argmin(np.abs(centred)), centred.shape)  # far from any tie
    shifted = encoded.y.copy()
    shifted[c, i, j] += 1.0
    packet = model.entropy.compress(torch.from_numpy(shifted)[None])[0]
    forged = bitstream.pack(bitstream.Packet(model.encoder_id, shifted.shape, packet))
    problems = TOOL.compare(model, {name: TOOL.Encoded(forged, encoded.y)})
    assert problems and "away from a rounding tie" in problems[0]
