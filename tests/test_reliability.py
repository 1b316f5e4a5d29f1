"""Hostile-input reliability of the server side: the decoder and the HTTP server under fuzzing.

`tests/test_bitstream.py` fuzzes the pure parser; here the packets go further, into compressai's
rANS decoder, which is C++ without bounds checks. The dangerous inputs are the ones the parser
*accepts*: a valid CRC around a forged payload or a forged (but within-limits) latent shape. The
contract: `ServerPart.decode_latent` either raises `BitstreamError` or returns a latent of the
declared shape, and never crashes the process; the HTTP server answers 4xx to all of it and keeps
serving. ``benchmarks/fuzz.py`` runs the same idea at scale, with a child process per batch.
"""

from __future__ import annotations

import os
import random
import struct
import time
import zlib

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from frankensplit import bitstream
from frankensplit.bitstream import BitstreamError, LimitExceededError, Limits, Packet, pack, unpack
from frankensplit.models.split import ServerPart
from frankensplit.models.zoo import create_model
from frankensplit.runtime.server import ServerConfig, create_app, run_in_thread
from frankensplit.runtime.server.loading import served_model

MODEL_ID = "fs-lite0-untrained"
HOSTILE = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def model():
    """The zoo model with an untrained teacher: the codec path is what is under test."""
    torch.manual_seed(0)
    return create_model(MODEL_ID, teacher_weights=None)


@pytest.fixture(scope="module")
def small_packets(model) -> list[bytes]:
    """Real edge encodings with latent (48, 8, 8) at low, medium and high rate."""
    torch.manual_seed(1)
    x = torch.randn(3, 3, 64, 64) * torch.tensor([0.1, 1.0, 10.0]).view(3, 1, 1, 1)
    return model.edge.encode(x)


def _reframe(model_id: bytes, shape: tuple[int, int, int], payload: bytes) -> bytes:
    """A stream with any id bytes and shape, a truthful length and a correct CRC."""
    length, varint = len(payload), bytearray()
    while True:
        varint.append((length & 0x7F) | (0x80 if length >> 7 else 0))
        length >>= 7
        if not length:
            break
    body = (bitstream.MAGIC + bytes((bitstream.FORMAT_VERSION, len(model_id))) + model_id
            + struct.pack(">HHH", *shape) + bytes(varint) + payload)
    return body + struct.pack(">I", zlib.crc32(body))


def _hostile(data: st.DataObject, bases: list[bytes], max_hw: int = 32) -> bytes:
    """One hostile stream: random bytes, a broken real packet, or a forgery behind a valid CRC."""
    base = data.draw(st.sampled_from(bases), label="base")
    packet = unpack(base)
    kind = data.draw(st.sampled_from(
        ["random", "flips", "truncate", "forged_payload", "forged_shape", "forged_both"]
    ), label="kind")
    if kind == "random":
        return data.draw(st.binary(max_size=400))
    if kind == "flips":
        raw = bytearray(base)
        for bit in data.draw(st.lists(st.integers(0, len(raw) * 8 - 1), min_size=1, max_size=8)):
            raw[bit // 8] ^= 1 << (bit % 8)
        return bytes(raw)
    if kind == "truncate":
        return base[: data.draw(st.integers(0, len(base) - 1))]
    payload, shape = packet.payload, packet.shape
    if kind in ("forged_payload", "forged_both"):
        payload = data.draw(st.one_of(
            st.binary(max_size=600),
            st.builds(lambda n, b: bytes([b]) * n, st.integers(0, 3000), st.sampled_from([0, 255])),
            st.builds(lambda n: packet.payload[:n], st.integers(0, len(packet.payload))),
        ), label="payload")
    if kind in ("forged_shape", "forged_both"):
        dim = st.integers(1, max_hw)
        channels = st.sampled_from([packet.shape[0], packet.shape[0], 1, 47, 49, 192])
        shape = data.draw(st.tuples(channels, dim, dim), label="shape")
    return _reframe(packet.model_id.encode(), shape, payload)


@HOSTILE
@given(data=st.data())
def test_decode_latent_raises_bitstream_error_or_decodes_the_declared_shape(
    model, small_packets, data
):
    stream = _hostile(data, small_packets)
    try:
        y_hat = model.server.decode_latent([stream])
    except BitstreamError as e:
        event(type(e).__name__)
        return
    event("decoded")
    declared = unpack(stream).shape
    assert tuple(y_hat.shape) == (1, *declared)
    assert bool(torch.isfinite(y_hat).all())


def test_declared_huge_latent_is_refused_before_any_decoding(model, monkeypatch):
    """A tiny stream declaring a 64x256x256 latent costs nothing when the limit is small."""
    limits = Limits(max_latent_elements=48 * 32 * 32)
    part = ServerPart(MODEL_ID, model.entropy, model.g_s, model.teacher.tail, limits=limits)

    def never(*args, **kwargs):
        raise AssertionError("the entropy decoder ran on a packet over the limits")

    monkeypatch.setattr(part.entropy, "decompress", never)
    bomb = pack(Packet(MODEL_ID, (64, 256, 256), b"\x00" * 16))
    with pytest.raises(LimitExceededError, match="max_latent_elements"):
        part.parse(bomb)  # refused by the parser, before anything is allocated for the latent
    with pytest.raises(LimitExceededError, match="max_latent_elements"):
        part.decode_latent([bomb])
    # the same shape with the model's channel count: still refused by the limit, not the channels
    with pytest.raises(LimitExceededError):
        part.decode_latent([pack(Packet(MODEL_ID, (48, 256, 256), b""))])


def test_server_answers_fuzzed_packets_with_4xx_and_keeps_serving(model, small_packets):
    served = served_model(model)  # accepts exactly the (48, 28, 28) latent of a 224 crop
    torch.manual_seed(2)
    valid = model.edge.encode(torch.randn(1, 3, 224, 224))[0]
    assert unpack(valid).shape == served.latent_shape
    expected_top1 = int(model.server.decode([valid]).argmax(1))

    bodies = _fuzzed_bodies(valid, small_packets, served.latent_shape)
    app = create_app({MODEL_ID: served}, ServerConfig(max_body_bytes=100_000))
    with run_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.05)
        statuses = [client.post("/v1/classify", content=body).status_code for body in bodies]
        assert all(400 <= s < 500 for s in statuses), statuses
        answer = client.post("/v1/classify", content=valid)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["index"] == expected_top1


def _fuzzed_bodies(
    valid: bytes, small: list[bytes], accepted: tuple[int, int, int]
) -> list[bytes]:
    """About 50 invalid bodies; forged shapes avoid the accepted one, which could decode."""
    rng = random.Random(0)
    packet = unpack(valid)
    bodies: list[bytes] = [b"", b"FSB", b"FSB\x02", rng.randbytes(200), valid[:-1], valid + b"\0"]
    for _ in range(12):  # one or a few bit flips: always a CRC or framing error
        raw = bytearray(valid)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(raw) * 8)
            raw[i // 8] ^= 1 << (i % 8)
        bodies.append(bytes(raw))
    bodies += [valid[: rng.randrange(len(valid))] for _ in range(8)]
    bodies += small  # valid streams, but not the latent shape the server accepts
    for _ in range(16):  # forgeries with a valid CRC
        shape = rng.choice([(48, 8, 8), (48, 28, 27), (47, 28, 28), (48, 296, 296), (64, 256, 256)])
        assert shape != accepted
        payload = rng.choice([b"", b"\xff" * 3, rng.randbytes(500), packet.payload])
        bodies.append(_reframe(packet.model_id.encode(), shape, payload))
    bodies.append(_reframe(b"no-such-model", packet.shape, packet.payload))  # 404
    bodies.append(valid + b"\0" * 100_000)  # 413
    return bodies
