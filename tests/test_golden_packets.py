"""Golden packets: every shipped zoo model writes the golden packets for two bundled photos, at 1
and 2 torch threads.

``tests/golden/packets/<model>/<photo>.fsb`` holds the packets ``frankensplit encode`` wrote when
they were recorded (``tests/golden/packets.json`` indexes them); a variable-rate model has one per
photo and rate, ``<photo>_r<rate>.fsb``. Any change of what a model writes (wire format, header,
quantisation, gains, CDF tables, preprocessing, weights) fails here; a symbol that flips at a
rounding tie between thread counts or CPUs does not (see ``tools/golden_packets.py``, `compare`).
The variable-rate path is tested on a seeded random model recorded into a temporary folder, so it
runs before such a model ships. ``tests/test_portability.py`` runs this file again under
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
from frankensplit.cli import main as cli_main
from frankensplit.data import load_image, make_transform
from frankensplit.models.architecture import Architecture
from frankensplit.models.codec_file import save_codec
from frankensplit.models.zoo_index import MODELS
from frankensplit.threads import seeded, torch_threads
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


def test_every_shipped_model_records_each_photo_at_each_rate() -> None:
    names = sorted(RECORDED["photos"])
    for model_id, packets in RECORDED["packets"].items():
        rates = MODELS.get(model_id).architecture.rates
        assert sorted(packets) == sorted(TOOL.packet_keys(names, rates)), (
            f"{model_id}: the golden file does not hold one packet per photo and rate: "
            f"{REGENERATE}")


# The variable-rate path, on a model of its own: recorded into tmp_path, never tests/golden/.

VR_RATES = (16.0, 4.0, 1.0)


@pytest.fixture(scope="module")
def vr_model():
    """A seeded variable-rate lite0 model (random teacher and codec): gains spread so that the
    rates differ, and each rate's medians moved to its own value (0.25, 0.5, 0.75), so a
    comparison centred on another rate's medians, or on none, would judge ties wrongly."""
    arch = Architecture(teacher="tf_efficientnet_lite0", entropy="gained_factorized",
                        rates=VR_RATES)
    with seeded(0):
        model = arch.build("fs-test-vr", teacher_weights=None).eval()
    with torch.no_grad():
        model.entropy.log_gain.copy_(torch.linspace(-1.0, 1.0, len(VR_RATES))[:, None]
                                     .expand(-1, model.entropy.channels))
        model.entropy.log_inverse_gain.copy_(-model.entropy.log_gain)
        for r, bottleneck in enumerate(model.entropy.bottlenecks):
            bottleneck.quantiles += 0.25 * (r + 1)
    model.update(force=True)
    return model


@pytest.fixture
def vr_recorded(vr_model, photos: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> dict:
    """`vr_model`'s packets, written at 1 thread into a golden folder under ``tmp_path``."""
    monkeypatch.setattr(TOOL, "GOLDEN", tmp_path / "golden" / "packets.json")
    with torch_threads(1):
        written = TOOL.encode(vr_model, photos)
    TOOL.write(TOOL.index(photos, {vr_model.model_id: written}), {vr_model.model_id: written})
    return written


def test_a_variable_rate_model_records_every_rate_and_matches_at_2_threads(
        vr_model, vr_recorded, photos: list[Path], tmp_path: Path) -> None:
    names = [p.name for p in photos]
    assert sorted(vr_recorded) == sorted(TOOL.packet_keys(names, VR_RATES))
    folder = tmp_path / "golden" / "packets" / vr_model.model_id
    assert sorted(f.name for f in folder.iterdir()) == sorted(
        f"{Path(n).stem}_r{r}.fsb" for n in names for r in range(len(VR_RATES)))
    for key, encoded in vr_recorded.items():
        rate = key.split("@r")[1]
        assert bitstream.unpack(encoded.packet).rate == int(rate)
        assert TOOL.recorded_packet(vr_model.model_id, key) == encoded.packet
    assert len({e.packet for e in vr_recorded.values()}) == len(vr_recorded)  # rates differ
    transform = make_transform(vr_model.data_config, "eval")
    x = transform(load_image(photos[0])).unsqueeze(0)  # (1, 3, 224, 224)
    with torch_threads(1):  # g_a once, pack at each rate: the edge's encode at that rate
        for rate in range(len(VR_RATES)):
            (packet,) = vr_model.edge.encode(x, rate)
            assert packet == vr_recorded[f"{photos[0].name}@r{rate}"].packet
    for threads in (2, 1):
        with torch_threads(threads):
            written = TOOL.encode(vr_model, photos)
        assert TOOL.coverage(vr_model.model_id, written) == []
        assert TOOL.compare(vr_model, written) == [], f"at {threads} threads"


def _repacked(packet: bytes, **change: object) -> bytes:
    """``packet`` with fields of its header or its payload replaced (a valid CRC again)."""
    p = bitstream.unpack(packet)
    fields = {"model_id": p.model_id, "shape": p.shape, "payload": p.payload, "rate": p.rate}
    return bitstream.pack(bitstream.Packet(**{**fields, **change}))


def test_a_tampered_variable_rate_packet_is_reported(vr_model, vr_recorded) -> None:
    key = next(k for k in vr_recorded if k.endswith("@r1"))
    photo = key.split("@r")[0]
    encoded = vr_recorded[key]
    payload = bytearray(bitstream.unpack(encoded.packet).payload)
    payload[len(payload) // 2] ^= 0x5A
    other = vr_recorded[f"{photo}@r0"].packet  # the same latent, coded at rate 0
    tampered = {
        "one payload byte": _repacked(encoded.packet, payload=bytes(payload)),
        "another rate": other,
        "another rate's payload": _repacked(other, rate=1),
    }
    for what, packet in tampered.items():
        problems = TOOL.compare(vr_model, {key: TOOL.Encoded(packet, encoded.y)})
        assert problems and problems[0].startswith(key), what
    assert "header" in TOOL.compare(vr_model, {key: TOOL.Encoded(other, encoded.y)})[0]
    missing = {k: e for k, e in vr_recorded.items() if k != key}
    assert TOOL.coverage(vr_model.model_id, missing) and TOOL.compare(vr_model, missing) == []


def test_variable_rate_ties_are_judged_on_the_gained_latent(vr_model, vr_recorded) -> None:
    """What is rounded at rate r is ``y * gain[r] - median[r]``: a symbol flipped there at a tie
    passes; one moved by a step (1 / gain[r] in y) away from a tie fails."""
    rate = len(VR_RATES) - 1
    key = next(k for k in vr_recorded if k.endswith(f"@r{rate}"))
    y = vr_recorded[key].y
    gain, _ = vr_model.entropy.gains(rate)
    median = vr_model.entropy.medians(rate)
    c, i, j = 0, 0, 0
    tie = (0.5 + float(median[c])) / float(gain[c])  # rounds to 0 or 1 at this rate
    assert abs(abs(tie - float(median[c]) - np.floor(tie - float(median[c]))) - 0.5) > 0.1
    below, above = y.copy(), y.copy()
    below[c, i, j], above[c, i, j] = tie - 1e-5, tie + 1e-5

    def pack(latent: np.ndarray) -> bytes:
        return vr_model.edge.pack(torch.from_numpy(latent)[None], rate)[0]

    assert TOOL.symbol_flips(vr_model, pack(below), pack(above), above) == (1, [])
    shifted = y.copy()
    centred = TOOL.rounded(vr_model, y, rate)
    c, i, j = np.unravel_index(np.argmin(np.abs(centred - np.round(centred))), centred.shape)
    shifted[c, i, j] += 1.0 / float(gain[c])  # one symbol up, far from any tie
    n, problems = TOOL.symbol_flips(vr_model, pack(y), pack(shifted), y)
    assert n == 1 and problems and "away from a rounding tie" in problems[0]


def test_encode_at_a_rate_writes_the_recorded_packet(vr_model, vr_recorded, photos: list[Path],
                                                     tmp_path: Path, capsys) -> None:
    """``frankensplit encode --rate R`` on the model's codec file writes the tool's packet."""
    codec = tmp_path / "fs-test-vr.safetensors"
    save_codec(vr_model, codec)
    out = tmp_path / "out"
    argv = ["encode", "--model", str(codec), str(photos[0]), "--out", str(out)]
    with torch_threads(1):
        assert cli_main([*argv, "--rate", "2"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["rate"] == 2
    recorded = vr_recorded[f"{photos[0].name}@r2"].packet
    assert (out / f"{photos[0].stem}.fsb").read_bytes() == recorded
    assert cli_main(argv) == 2  # a variable-rate model without --rate: one line naming the rates
    assert "pass --rate I, one of 0 (lambda 16), 1 (lambda 4), 2 (lambda 1)" in \
        capsys.readouterr().err
