"""Invariant tests for the wire format: round trip, exact framing, and hostile input handling."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frankensplit import bitstream
from frankensplit.bitstream import (
    FORMAT_VERSION,
    MAGIC,
    BitstreamError,
    CorruptError,
    ForeignFormatError,
    LimitExceededError,
    Limits,
    Packet,
    TruncatedError,
    UnsupportedVersionError,
    header_size,
    pack,
    unpack,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

model_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=64)
dims = st.integers(min_value=1, max_value=64)
packets = st.builds(
    Packet,
    model_id=model_ids,
    shape=st.tuples(dims, dims, dims),
    payload=st.binary(max_size=300),
)

SAMPLE = Packet("fs-swin.t-48ch", (48, 28, 28), bytes(range(256)) * 8)


def _frame(body: bytes) -> bytes:
    """Append a correct CRC, to build streams that fail only on the check under test."""
    return body + struct.pack(">I", zlib.crc32(body))


def _body(model_id: bytes, shape: tuple[int, int, int], payload_len_field: bytes) -> bytes:
    return (
        MAGIC
        + bytes((FORMAT_VERSION, len(model_id)))
        + model_id
        + struct.pack(">HHH", *shape)
        + payload_len_field
    )


@FAST
@given(packets)
def test_round_trip(packet: Packet) -> None:
    assert unpack(pack(packet)) == packet


@FAST
@given(packets)
def test_header_size_counts_every_non_payload_byte(packet: Packet) -> None:
    expected = len(pack(packet)) - len(packet.payload)
    assert header_size(packet.model_id, len(packet.payload)) == expected


@pytest.mark.parametrize(
    ("payload_size", "varint_bytes"),
    [(0, 1), (127, 1), (128, 2), (2048, 2), (16383, 2), (16384, 3), (2**32 - 1, 5)],
)
def test_header_size_grows_with_varint(payload_size: int, varint_bytes: int) -> None:
    assert header_size("a" * 16, payload_size) == 3 + 1 + 1 + 16 + 6 + varint_bytes + 4


def test_golden_bytes() -> None:
    """Locks the version-1 layout; change only together with FORMAT_VERSION."""
    fields = [
        "465342",  # magic b"FSB"
        "01",  # version
        "04",  # model id length
        "74696e79",  # b"tiny"
        "0002",  # C
        "0003",  # H
        "0004",  # W
        "02",  # payload length varint
        "aabb",  # payload
        "44aa78a5",  # CRC-32 of everything above
    ]
    assert pack(Packet("tiny", (2, 3, 4), b"\xaa\xbb")).hex() == "".join(fields)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_accepts_bytes_like(kind: type) -> None:
    assert unpack(kind(pack(SAMPLE))) == SAMPLE


@pytest.mark.parametrize("bad", ["FSB...", [1, 2, 3], None, 42])
def test_rejects_other_input_types(bad: object) -> None:
    with pytest.raises(TypeError, match="bytes"):
        unpack(bad)  # type: ignore[arg-type]


def test_every_truncation_raises_truncated() -> None:
    stream = pack(Packet("m", (1, 2, 3), b"xyz" * 50))  # 150 B payload: a 2-byte varint
    for cut in range(len(stream)):
        with pytest.raises(TruncatedError):
            unpack(stream[:cut])


def test_truncation_message_names_expected_and_present() -> None:
    stream = pack(SAMPLE)
    with pytest.raises(
        TruncatedError, match=f"expected {len(stream)} bytes, got {len(stream) - 1}"
    ):
        unpack(stream[:-1])


def test_every_single_bit_flip_is_detected() -> None:
    stream = bytearray(pack(Packet("ab", (3, 4, 5), b"payload!" * 20)))
    for i in range(len(stream) * 8):
        stream[i // 8] ^= 1 << (i % 8)
        with pytest.raises(BitstreamError):
            unpack(stream)
        stream[i // 8] ^= 1 << (i % 8)
    assert unpack(stream).model_id == "ab"


@pytest.mark.parametrize("data", [b"", b"GIF89a", b"\x89PNG\r\n\x1a\n" + bytes(40), b"FS"])
def test_foreign_or_empty(data: bytes) -> None:
    if MAGIC.startswith(data):
        with pytest.raises(TruncatedError):
            unpack(data)
    else:
        with pytest.raises(ForeignFormatError, match="magic"):
            unpack(data)


def test_future_version() -> None:
    stream = bytearray(pack(SAMPLE))
    future = max(bitstream.VERSIONS) + 1
    stream[len(MAGIC)] = future
    with pytest.raises(UnsupportedVersionError, match=f"version {future}.*reads versions 1, 2"):
        unpack(bytes(stream))


def test_a_version_byte_changed_between_the_known_versions_is_corruption() -> None:
    """Version 2 reads one more header byte: a version-1 packet relabelled 2 (or the reverse)
    misframes, and the CRC over the whole header refuses it."""
    for rate in (None, 3):
        stream = bytearray(pack(Packet(SAMPLE.model_id, SAMPLE.shape, SAMPLE.payload, rate)))
        stream[len(MAGIC)] = 3 - stream[len(MAGIC)]
        with pytest.raises(bitstream.BitstreamError):
            unpack(bytes(stream))


def test_trailing_bytes() -> None:
    with pytest.raises(CorruptError, match="2 trailing bytes"):
        unpack(pack(SAMPLE) + b"\x00\x00")


def test_crc_mismatch() -> None:
    stream = bytearray(pack(SAMPLE))
    stream[-1] ^= 0xFF
    with pytest.raises(CorruptError, match="CRC"):
        unpack(bytes(stream))


def test_dims_over_limits() -> None:
    big = pack(Packet("m", (64, 1024, 1024), b""))
    with pytest.raises(LimitExceededError, match="max_latent_elements"):
        unpack(big)
    with pytest.raises(LimitExceededError, match="max_dim=16"):
        unpack(pack(Packet("m", (1, 1, 17), b"")), Limits(max_dim=16))
    huge_dim = _frame(_body(b"m", (1, 1, 5000), b"\x00"))
    with pytest.raises(LimitExceededError, match="max_dim=4096"):
        unpack(huge_dim)


def test_zero_dim_is_corrupt() -> None:
    with pytest.raises(CorruptError, match=">= 1"):
        unpack(_frame(_body(b"m", (4, 0, 4), b"\x00")))


def test_payload_over_limit() -> None:
    stream = pack(Packet("m", (1, 1, 1), bytes(11)))
    assert unpack(stream, Limits(max_payload_bytes=11)).payload == bytes(11)
    with pytest.raises(LimitExceededError, match="max_payload_bytes=10"):
        unpack(stream, Limits(max_payload_bytes=10))


def test_check_limits_holds_an_unpacked_packet_to_other_limits() -> None:
    from frankensplit.bitstream import check_limits

    packet = unpack(pack(Packet("m", (4, 8, 8), bytes(11))))  # fits the generic limits
    check_limits(packet, Limits(max_payload_bytes=11, max_latent_elements=256))
    with pytest.raises(LimitExceededError, match="max_payload_bytes=10"):
        check_limits(packet, Limits(max_payload_bytes=10))
    with pytest.raises(LimitExceededError, match="max_latent_elements=255"):
        check_limits(packet, Limits(max_latent_elements=255))
    with pytest.raises(LimitExceededError, match="max_dim=7"):
        check_limits(packet, Limits(max_dim=7))


def test_huge_declared_payload_is_refused_before_use() -> None:
    """A 4 GiB declared length in a 20-byte stream: a limit error, no allocation, no hang."""
    stream = _frame(_body(b"m", (1, 1, 1), b"\xff\xff\xff\xff\x0f"))
    with pytest.raises(LimitExceededError, match="4294967295"):
        unpack(stream)


@pytest.mark.parametrize(
    ("field", "match"),
    [
        (b"\x80\x80\x80\x80\x80\x01", "longer than 5"),  # 6 bytes
        (b"\x80\x00", "minimally"),  # 0 with a redundant group
        (b"\xff\xff\xff\xff\x1f", "2\\*\\*32"),  # 2**35 - 1
    ],
)
def test_malformed_payload_length(field: bytes, match: str) -> None:
    with pytest.raises(CorruptError, match=match):
        unpack(_frame(_body(b"m", (1, 1, 1), field)), Limits(max_payload_bytes=2**40))


@pytest.mark.parametrize("raw_id", [b"Bad", b"a b", b"\xff\xfe", b"a/b"])
def test_bad_model_id_in_stream_is_corrupt(raw_id: bytes) -> None:
    with pytest.raises(CorruptError, match="model id"):
        unpack(_frame(_body(raw_id, (1, 1, 1), b"\x00")))


def test_bad_model_id_length_byte() -> None:
    body = bytearray(_body(b"m" * 10, (1, 1, 1), b"\x00"))
    body[len(MAGIC) + 1] = 0
    with pytest.raises(CorruptError, match="1..64"):
        unpack(_frame(bytes(body)))


@pytest.mark.parametrize("model_id", ["", "A", "has space", "x" * 65, "ü", "a/b", "a\n"])
def test_invalid_model_id_on_pack(model_id: str) -> None:
    with pytest.raises(ValueError, match="model_id"):
        pack(Packet(model_id, (1, 1, 1), b""))
    with pytest.raises(ValueError, match="model_id"):
        header_size(model_id, 0)


@pytest.mark.parametrize(
    ("shape", "error"),
    [
        ((0, 1, 1), ValueError),
        ((1, 1, 65536), ValueError),
        ((1, 1), ValueError),
        ((1.0, 1, 1), TypeError),
        ((True, 1, 1), TypeError),
    ],
)
def test_invalid_shape_on_pack(shape: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="shape"):
        Packet("m", shape, b"")  # type: ignore[arg-type]


def test_packet_normalizes_inputs() -> None:
    packet = Packet("m", [1, 2, 3], bytearray(b"ab"))  # type: ignore[arg-type]
    assert packet.shape == (1, 2, 3) and type(packet.payload) is bytes
    with pytest.raises(TypeError, match="payload"):
        Packet("m", (1, 1, 1), "ab")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Packet"):
        pack(b"not a packet")  # type: ignore[arg-type]


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_dim"):
        Limits(max_dim=0)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=80), st.binary(max_size=80).map(lambda b: MAGIC + b"\x01" + b)))
def test_random_bytes_only_raise_bitstream_errors(data: bytes) -> None:
    try:
        unpack(data)
    except BitstreamError:
        pass


@settings(max_examples=300, deadline=None)
@given(packets, st.data())
def test_mutated_streams_only_raise_bitstream_errors(packet: Packet, data: st.DataObject) -> None:
    stream = bytearray(pack(packet))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        i = data.draw(st.integers(0, len(stream) - 1))
        if op == "set":
            stream[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            stream.insert(i, data.draw(st.integers(0, 255)))
        elif len(stream) > 1:
            del stream[i]
    try:
        unpack(bytes(stream))
    except BitstreamError:
        pass


def test_module_imports_without_torch_or_numpy() -> None:
    path = Path(bitstream.__file__).resolve()
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('fs_bitstream', {str(path)!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "sys.modules[spec.name] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "assert mod.unpack(mod.pack(mod.Packet('m', (1, 1, 1), b'x'))).payload == b'x'\n"
        "bad = sorted(m for m in ('torch', 'numpy') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
