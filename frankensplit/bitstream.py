"""Versioned wire format for one image's entropy-coded latent.

A FrankenSplit edge device sends one *packet* per image: the entropy coder's output ``payload``
plus what the server needs to decode it (which model produced it, the latent shape). The header
is part of the reported ``bpp_actual``, so it is kept small: 15 bytes plus the model id and a 1-5
byte length field (version 1; version 2 adds one byte). This module is pure Python (``struct`` and ``zlib`` only)
because the torch-free edge client imports it.

Byte layout (version 1), all integers big-endian:

=============  ==========  ==================================================================
offset         size        field
=============  ==========  ==================================================================
0              3           ``MAGIC`` = ``b"FSB"`` (FrankenSplit Bitstream)
3              1           format version, ``FORMAT_VERSION`` = 1
4              1           ``n``: model id length, 1..64
5              n           model id, ASCII ``[a-z0-9._-]``
5+n            2           ``C``: latent channels, uint16, >= 1
7+n            2           ``H``: latent height, uint16, >= 1
9+n            2           ``W``: latent width, uint16, >= 1
11+n           k = 1..5    ``L``: payload length, unsigned LEB128, minimal encoding, < 2**32
11+n+k         L           payload: the entropy coder's bytes
11+n+k+L       4           CRC-32 (``zlib.crc32``) of every byte before it, uint32
=============  ==========  ==================================================================

Version 2 (a variable-rate model's packet) is version 1 with the version byte 2 and one more field
after ``W``: ``rate``, uint8, the index into the model's rate grid (``Architecture.rates``) the
payload was coded at. Everything after it moves by one byte. A packet without a rate is written as
version 1, byte for byte as before, and both versions are read.

Why these choices: a LEB128 length costs 2 bytes for the usual 128 B..16 KiB payloads instead of
4 for a fixed uint32; the explicit length (rather than "the rest of the buffer") lets the parser
tell a truncated stream from a corrupted one; the CRC covers the header too, so a flipped bit in
a shape or id can never decode into a silently wrong latent.

`unpack` checks in this order, so each failure gets the most specific error:

1. input type (``TypeError``), then minimum length (`TruncatedError`, or `ForeignFormatError`
   when even the available bytes do not start like ``MAGIC``);
2. magic (`ForeignFormatError`), version (`UnsupportedVersionError`);
3. framing: id length, the fixed fields and the varint are present (`TruncatedError`) and
   well-formed (`CorruptError`); the declared payload length is within `Limits`
   (`LimitExceededError`) *before* it is compared with or used on anything, so a hostile
   length never costs work;
4. total length: shorter is `TruncatedError`, longer is trailing garbage (`CorruptError`);
5. CRC (`CorruptError`), so corruption is reported as corruption, not as a semantic error;
6. semantics of the now-trusted fields: model id charset (`CorruptError`), dims >= 1
   (`CorruptError`) and within `Limits` (`LimitExceededError`).
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_MODEL_ID_LENGTH",
    "MAX_RATES",
    "RATE_VERSION",
    "VERSIONS",
    "BitstreamError",
    "CorruptError",
    "ForeignFormatError",
    "LimitExceededError",
    "Limits",
    "Packet",
    "TruncatedError",
    "UnsupportedVersionError",
    "check_limits",
    "header_size",
    "pack",
    "unpack",
]

FORMAT_VERSION: int = 1  # a fixed-rate model's packets
RATE_VERSION: int = 2  # a variable-rate model's packets: version 1 plus the rate byte
VERSIONS: tuple[int, ...] = (FORMAT_VERSION, RATE_VERSION)  # what `unpack` reads
MAX_RATES: int = 256  # the rate field is one byte
MAGIC: bytes = b"FSB"
MAX_MODEL_ID_LENGTH: int = 64

_MODEL_ID_RE = re.compile(rf"[a-z0-9._-]{{1,{MAX_MODEL_ID_LENGTH}}}")
_DIMS = struct.Struct(">HHH")
_CRC = struct.Struct(">I")
_MAX_DIM_FIELD = 0xFFFF
_MAX_PAYLOAD_FIELD = 0xFFFFFFFF
_MAX_VARINT_BYTES = 5  # ceil(32 / 7)
# magic + version + id length + 1-char id + dims + 1-byte varint + CRC, empty payload.
_MIN_STREAM_BYTES = len(MAGIC) + 1 + 1 + 1 + _DIMS.size + 1 + _CRC.size


class BitstreamError(ValueError):
    """Base class of every parse failure, so callers can catch one type for "bad stream"."""


class TruncatedError(BitstreamError):
    """The stream ends before the length its header declares (or before a minimal header)."""


class CorruptError(BitstreamError):
    """Checksum mismatch, trailing bytes, or a field value the format never produces."""


class ForeignFormatError(BitstreamError):
    """The bytes do not start with ``MAGIC``: this is not a FrankenSplit stream at all."""


class UnsupportedVersionError(BitstreamError):
    """A FrankenSplit stream of a format version this build cannot read."""


class LimitExceededError(BitstreamError):
    """Declared sizes above the configured `Limits`: refused before any work is spent on them."""


@dataclass(frozen=True)
class Limits:
    """Bounds `unpack` enforces, so a small hostile stream cannot make the decoder allocate much.

    Attributes:
        max_payload_bytes: largest accepted payload.
        max_latent_elements: largest accepted ``C * H * W``; the entropy decoder allocates a
            latent of this size, so this is the decompression-bomb guard.
        max_dim: largest accepted ``C``, ``H`` or ``W``.
    """

    max_payload_bytes: int = 1 << 20
    max_latent_elements: int = 64 * 256 * 256
    max_dim: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_payload_bytes", "max_latent_elements", "max_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class Packet:
    """One image's coded latent and what the server needs to decode it.

    Attributes:
        model_id: explicit id of the model that produced the payload, 1..64 characters of
            ``[a-z0-9._-]``; it selects the decoder, so it is never derived from anything implicit.
        shape: latent ``(C, H, W)``, each in 1..65535.
        payload: the entropy coder's output; a ``bytearray`` or ``memoryview`` is copied to bytes.
        rate: the rate index of a variable-rate model's packet (0..`MAX_RATES` - 1, written as
            version 2); None: a fixed-rate model's (version 1).

    Raises:
        TypeError: a field of the wrong type.
        ValueError: a model id or shape the format cannot carry.
    """

    model_id: str
    shape: tuple[int, int, int]
    payload: bytes
    rate: int | None = None

    def __post_init__(self) -> None:
        _check_model_id(self.model_id)
        if self.rate is not None and (isinstance(self.rate, bool) or not isinstance(self.rate, int)
                                      or not 0 <= self.rate < MAX_RATES):
            raise ValueError(f"rate must be None or an index in 0..{MAX_RATES - 1}, got "
                             f"{self.rate!r}")
        object.__setattr__(self, "shape", _check_shape(self.shape))
        if isinstance(self.payload, (bytearray, memoryview)):
            object.__setattr__(self, "payload", bytes(self.payload))
        elif not isinstance(self.payload, bytes):
            raise TypeError(f"payload must be bytes, got {type(self.payload).__name__}")
        if len(self.payload) > _MAX_PAYLOAD_FIELD:
            raise ValueError(
                f"payload is {len(self.payload)} bytes; the format carries at most "
                f"{_MAX_PAYLOAD_FIELD}"
            )


def _check_model_id(model_id: object) -> str:
    """Validate a model id for packing; ValueError/TypeError name the bad value."""
    if not isinstance(model_id, str):
        raise TypeError(f"model_id must be a str, got {type(model_id).__name__}")
    if not _MODEL_ID_RE.fullmatch(model_id):
        raise ValueError(
            f"model_id {model_id!r} is invalid; expected 1..{MAX_MODEL_ID_LENGTH} characters "
            "of [a-z0-9._-]"
        )
    return model_id


def _check_shape(shape: object) -> tuple[int, int, int]:
    """Validate a latent shape for packing and return it as a tuple."""
    if not isinstance(shape, (tuple, list)) or len(shape) != 3:
        raise ValueError(f"shape must be a (C, H, W) triple, got {shape!r}")
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TypeError(f"shape entries must be ints, got {shape!r}")
        if not 1 <= dim <= _MAX_DIM_FIELD:
            raise ValueError(f"shape entries must be in 1..{_MAX_DIM_FIELD}, got {shape!r}")
    return (shape[0], shape[1], shape[2])


def _encode_varint(value: int) -> bytes:
    """Unsigned LEB128, minimal: 7 bits per byte, low group first, high bit = more follows."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _decode_varint(data: memoryview, pos: int) -> tuple[int, int]:
    """Decode the payload-length varint at ``pos``; return ``(value, position after it)``."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise TruncatedError(
                f"stream ends inside the payload-length field: expected at least "
                f"{pos + i + 1 + _CRC.size} bytes, got {len(data)}"
            )
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i > 0 and byte == 0:
                raise CorruptError(
                    f"payload-length field at offset {pos} is not minimally encoded "
                    "(trailing zero group); expected canonical LEB128"
                )
            if value > _MAX_PAYLOAD_FIELD:
                raise CorruptError(
                    f"payload-length field at offset {pos} decodes to {value}; expected a "
                    f"value < 2**32"
                )
            return value, pos + i + 1
    raise CorruptError(
        f"payload-length field at offset {pos} is longer than {_MAX_VARINT_BYTES} bytes; "
        "expected a LEB128 value < 2**32"
    )


def header_size(model_id: str, payload_size: int, rate: int | None = None) -> int:
    """Bytes of a packed stream that are not payload (magic through CRC), for rate accounting.

    The payload length is a varint, so the header grows by one byte at each 7-bit boundary of
    ``payload_size`` (1 byte below 128, 2 below 16384, 3 below 2**21).

    Args:
        model_id: the packet's model id (validated as in `Packet`).
        payload_size: the payload length in bytes.
        rate: the packet's rate index (one more byte) or None.

    Returns:
        ``len(pack(packet)) - len(packet.payload)``.

    Raises:
        ValueError: invalid model id or a payload size outside 0..2**32-1.
    """
    _check_model_id(model_id)
    if not isinstance(payload_size, int) or not 0 <= payload_size <= _MAX_PAYLOAD_FIELD:
        raise ValueError(
            f"payload_size must be an int in 0..{_MAX_PAYLOAD_FIELD}, got {payload_size!r}"
        )
    varint = len(_encode_varint(payload_size))
    rate_field = 0 if rate is None else 1
    return len(MAGIC) + 1 + 1 + len(model_id) + _DIMS.size + rate_field + varint + _CRC.size


def pack(packet: Packet) -> bytes:
    """Serialize ``packet``: version 1 without a rate, version 2 with one (module docstring).

    Raises:
        TypeError: ``packet`` is not a `Packet`.
    """
    if not isinstance(packet, Packet):
        raise TypeError(f"pack expects a Packet, got {type(packet).__name__}")
    model_id = packet.model_id.encode("ascii")
    body = b"".join(
        (
            MAGIC,
            bytes((FORMAT_VERSION if packet.rate is None else RATE_VERSION, len(model_id))),
            model_id,
            _DIMS.pack(*packet.shape),
            b"" if packet.rate is None else bytes((packet.rate,)),
            _encode_varint(len(packet.payload)),
            packet.payload,
        )
    )
    return body + _CRC.pack(zlib.crc32(body))


def _check_prefix(data: memoryview) -> int:
    """Steps 1-2 of `unpack`: minimum length, magic, version (returned)."""
    head = bytes(data[: len(MAGIC)])
    if head != MAGIC[: len(head)]:
        raise ForeignFormatError(
            f"not a FrankenSplit stream: starts with {head!r}, expected magic {MAGIC!r}"
        )
    if len(data) < _MIN_STREAM_BYTES:
        raise TruncatedError(
            f"stream too short: expected at least {_MIN_STREAM_BYTES} bytes, got {len(data)}"
        )
    version = data[len(MAGIC)]
    if version not in VERSIONS:
        raise UnsupportedVersionError(
            f"FrankenSplit bitstream version {version} is not supported; this build reads "
            f"versions {', '.join(map(str, VERSIONS))}"
        )
    return version


def _check_dims(shape: tuple[int, int, int], limits: Limits) -> None:
    """Step 6 of `unpack` for the shape: dims >= 1 and within ``limits``."""
    if min(shape) < 1:
        raise CorruptError(f"latent shape {shape} has a zero dimension; expected each >= 1")
    if max(shape) > limits.max_dim:
        raise LimitExceededError(
            f"latent shape {shape} has a dimension above the limit max_dim={limits.max_dim}"
        )
    elements = shape[0] * shape[1] * shape[2]
    if elements > limits.max_latent_elements:
        raise LimitExceededError(
            f"latent shape {shape} has {elements} elements; the limit is "
            f"max_latent_elements={limits.max_latent_elements}"
        )


def _check_payload(payload_len: int, limits: Limits) -> None:
    if payload_len > limits.max_payload_bytes:
        raise LimitExceededError(
            f"declared payload of {payload_len} bytes exceeds the limit "
            f"max_payload_bytes={limits.max_payload_bytes}"
        )


def check_limits(packet: Packet, limits: Limits) -> None:
    """The size checks of `unpack` on an already unpacked packet, against other ``limits``.

    A server unpacks a packet once with the generic limits (to read whose it is), then holds it
    to the limits of the decoder it routes to, without unpacking it again.

    Raises:
        LimitExceededError: a payload or latent above ``limits``.
    """
    _check_payload(len(packet.payload), limits)
    _check_dims(packet.shape, limits)


def unpack(data: bytes | bytearray | memoryview, limits: Limits = Limits()) -> Packet:
    """Parse one packed stream, validating everything before trusting any of it.

    Args:
        data: exactly one stream, nothing before or after it.
        limits: bounds on declared sizes; raise them only for trusted senders.

    Returns:
        The decoded `Packet`.

    Raises:
        TypeError: ``data`` is not bytes, bytearray or memoryview.
        BitstreamError: a subclass naming what was wrong; see the module docstring for the order
            of the checks.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"unpack expects bytes, bytearray or memoryview, got {type(data).__name__}")
    if not isinstance(limits, Limits):
        raise TypeError(f"limits must be a Limits, got {type(limits).__name__}")
    view = memoryview(data).cast("B")
    version = _check_prefix(view)
    rate_field = 1 if version == RATE_VERSION else 0

    id_len = view[len(MAGIC) + 1]
    if not 1 <= id_len <= MAX_MODEL_ID_LENGTH:
        raise CorruptError(f"model id length byte is {id_len}; expected 1..{MAX_MODEL_ID_LENGTH}")
    id_start = len(MAGIC) + 2
    dims_start = id_start + id_len
    varint_start = dims_start + _DIMS.size + rate_field
    if len(view) < varint_start + 1 + _CRC.size:
        raise TruncatedError(
            f"stream too short for its header: expected at least "
            f"{varint_start + 1 + _CRC.size} bytes, got {len(view)}"
        )
    payload_len, payload_start = _decode_varint(view, varint_start)
    _check_payload(payload_len, limits)

    total = payload_start + payload_len + _CRC.size
    if len(view) < total:
        raise TruncatedError(f"stream truncated: expected {total} bytes, got {len(view)}")
    if len(view) > total:
        raise CorruptError(
            f"{len(view) - total} trailing bytes after the stream: expected {total} bytes, "
            f"got {len(view)}"
        )
    crc_start = total - _CRC.size
    (stored_crc,) = _CRC.unpack_from(view, crc_start)
    actual_crc = zlib.crc32(view[:crc_start])
    if stored_crc != actual_crc:
        raise CorruptError(
            f"CRC-32 mismatch: stored 0x{stored_crc:08x}, computed 0x{actual_crc:08x}; "
            "the stream was corrupted"
        )

    raw_id = bytes(view[id_start:dims_start])
    model_id = raw_id.decode("ascii", errors="replace")
    if not _MODEL_ID_RE.fullmatch(model_id):
        raise CorruptError(f"model id {raw_id!r} is invalid; expected [a-z0-9._-] characters")
    channels, height, width = _DIMS.unpack_from(view, dims_start)
    shape = (channels, height, width)
    _check_dims(shape, limits)
    rate = view[dims_start + _DIMS.size] if rate_field else None
    return Packet(model_id, shape, bytes(view[payload_start:crc_start]), rate)
