"""Golden packets: every shipped zoo model writes byte-identical packets for two bundled photos.

``tests/golden/packets.json`` holds the sha256 and length of the ``.fsb`` packet that
``frankensplit encode`` (in process) writes per shipped model and photo. Any change of a packet
byte (wire format, header, quantisation, CDF tables, preprocessing, weights) fails here. Regenerate
only on purpose: ``HF_HUB_OFFLINE=1 .venv/bin/python tools/golden_packets.py --write``. The packets
were found identical at 1, 2 and 8 torch threads.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "packets.json"
REGENERATE = "`HF_HUB_OFFLINE=1 .venv/bin/python tools/golden_packets.py --write`"


def _tool():
    spec = importlib.util.spec_from_file_location("golden_packets", REPO / "tools/golden_packets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _tool()
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


@pytest.mark.parametrize("model_id", sorted(RECORDED["packets"]))
def test_packets_are_byte_identical(model_id: str, photos: list[Path]) -> None:
    assert TOOL.packets(model_id, photos) == RECORDED["packets"][model_id], (
        f"{model_id} writes different packets; if that is intended, {REGENERATE}")
