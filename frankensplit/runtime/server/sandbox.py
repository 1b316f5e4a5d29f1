"""rANS decoding of untrusted payloads in a separate, disposable process.

Why a process: compressai's compiled ``RansDecoder`` does no bounds checking. A well-framed packet
(valid header and CRC, which anyone can compute) whose payload is shorter than the latent needs
(an empty payload is enough) made it read past the end of its buffer and crash (now padded:
`coding.pad_payload`); a forged payload can also keep it busy in its escape (bypass)
decoding. So the server never runs that decoder in its own address space: a small torch-free
worker (numpy and the rANS extension only) decodes payloads into integer symbols. If it crashes
or exceeds a time limit it is killed and restarted, and only the offending request fails.

The worker is a plain ``python -c`` subprocess talking length-prefixed frames over its stdin and
stdout (not ``multiprocessing``, whose spawn mode re-imports the parent's ``__main__`` and breaks in
scripts without a main guard). Per batch that is one round trip: payloads in, ``C*H*W`` int32
symbols per payload out (0.15 MB for a 48x28x28 latent), small next to the teacher tail.

`SandboxCoder` is a `ServerPart`'s coder (``models.split.LatentCoder``) over this worker: the part
checks a packet, the worker turns its payload into symbols with the tables of the packet's rate,
and the coder dequantises them in this process (medians, and a variable-rate model's inverse
gain), exactly as the in-process torch decoder would.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from frankensplit.bitstream import CorruptError, Packet
from frankensplit.coding import FactorizedCoder

__all__ = ["DecoderCrashedError", "SandboxCoder", "SandboxedDecoder"]

_LEN = struct.Struct(">I")
_TABLES = ("quantized_cdf", "cdf_length", "offset", "medians")


class DecoderCrashedError(CorruptError):
    """The payload crashed or stalled the entropy decoder: it cannot be a valid stream."""


def _write(stream: BinaryIO, data: bytes) -> None:
    stream.write(_LEN.pack(len(data)))
    stream.write(data)


def _read(stream: BinaryIO) -> bytes:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError("decoder pipe closed")
    (size,) = _LEN.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("decoder pipe closed")
    return data


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def worker_main() -> None:
    """The worker process: read tables, then answer decode requests until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    coders = {}
    for model_id, rates in json.loads(_read(stdin)):
        for rate in rates:
            tables = {n: np.load(io.BytesIO(_read(stdin)), allow_pickle=False) for n in _TABLES}
            coders[model_id, rate] = FactorizedCoder(**tables)
    _write(stdout, b"ready")
    stdout.flush()
    while True:
        try:
            request = json.loads(_read(stdin))
        except EOFError:
            return
        coder = coders[request["model"], request["rate"]]
        size = (request["h"], request["w"])
        payloads = [_read(stdin) for _ in range(request["n"])]
        for payload in payloads:
            _write(stdout, coder.decode_symbols(payload, size).tobytes())  # padded
        stdout.flush()


def _per_rate(tables: Mapping[Any, Any]) -> dict[int | None, dict[str, np.ndarray]]:
    """One model's tables by rate index (None: a fixed-rate model), from either one set of
    tables (names -> arrays) or a mapping rate -> set (`ServerPart.coding_tables`)."""
    sets = {None: tables} if "quantized_cdf" in tables else dict(tables)
    missing = {r: sorted(set(_TABLES) - set(t)) for r, t in sets.items() if set(_TABLES) - set(t)}
    if missing:
        raise ValueError(f"entropy tables incomplete: {missing}")
    return {r: {n: np.asarray(a) for n, a in t.items()} for r, t in sets.items()}


class SandboxedDecoder:
    """Decode factorized-prior payloads into symbols in a worker process (thread-safe, blocking).

    Args:
        tables: model id -> its ``{"quantized_cdf", "cdf_length", "offset", "medians"}`` arrays,
            or, for a variable-rate model, rate index -> such arrays (gain vectors may come with
            them: `SandboxCoder` dequantises with them; the worker needs only the four).
        timeout_s: longest one round trip may take before the worker is considered stuck.
    """

    def __init__(
        self, tables: Mapping[str, Mapping[Any, Any]], timeout_s: float = 5.0
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self._tables = {m: _per_rate(t) for m, t in tables.items()}
        self._channels = {m: int(next(iter(t.values()))["quantized_cdf"].shape[0])
                          for m, t in self._tables.items()}
        self.timeout_s = timeout_s
        self.restarts = 0
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def tables(self, model_id: str) -> dict[int | None, dict[str, np.ndarray]]:
        """A model's tables by rate index (None: its fixed rate)."""
        if model_id not in self._tables:
            raise ValueError(f"no entropy tables for model {model_id!r}")
        return self._tables[model_id]

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parents[3])  # the folder holding this frankensplit
        code = (f"import sys; sys.path.insert(0, {root!r}); "
                "from frankensplit.runtime.server.sandbox import worker_main; worker_main()")
        process = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        timer = threading.Timer(60.0, process.kill)
        timer.start()
        try:
            index = [[m, list(rates)] for m, rates in self._tables.items()]
            _write(process.stdin, json.dumps(index).encode())
            for rates in self._tables.values():
                for tables in rates.values():
                    for name in _TABLES:
                        _write(process.stdin, _npy(tables[name]))
            process.stdin.flush()
            if _read(process.stdout) != b"ready":
                raise EOFError("unexpected greeting")
        except (EOFError, OSError) as e:
            self._kill()
            raise RuntimeError(f"the entropy-decoder worker process did not start: {e}") from e
        finally:
            timer.cancel()

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=5.0)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()

    def start(self) -> None:
        """Start the worker now (otherwise the first `decode` does)."""
        with self._lock:
            if self._process is None:
                self._start()

    def close(self) -> None:
        """Stop the worker."""
        with self._lock:
            self._kill()

    def _roundtrip(self, model_id: str, payloads: list[bytes], size: tuple[int, int],
                   rate: int | None) -> list[bytes]:
        if self._process is None:
            self._start()
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        timer = threading.Timer(self.timeout_s, process.kill)
        timer.start()
        try:
            header = {"model": model_id, "rate": rate, "h": size[0], "w": size[1],
                      "n": len(payloads)}
            _write(process.stdin, json.dumps(header).encode())
            for payload in payloads:
                _write(process.stdin, payload)
            process.stdin.flush()
            return [_read(process.stdout) for _ in payloads]
        except (EOFError, OSError):
            self._kill()  # crashed or killed by the timer: a fresh worker serves the next call
            self.restarts += 1
            raise DecoderCrashedError(
                "entropy decoding failed: the payload crashed or stalled the rANS decoder"
            ) from None
        finally:
            timer.cancel()

    def decode(
        self, model_id: str, payloads: Sequence[bytes], size: tuple[int, int],
        rate: int | None = None,
    ) -> list[np.ndarray | DecoderCrashedError]:
        """Symbols (C, h, w) int32 per payload, or the error of a payload that broke the decoder.

        The batch (one model, latent size and ``rate``: the index of a variable-rate model's
        rate, None for a fixed-rate model) is decoded in one round trip; if that fails, each
        payload is retried alone so one forged payload only fails its own request.

        Raises:
            ValueError: a model or rate without tables.
        """
        if rate not in self.tables(model_id):
            raise ValueError(f"no entropy tables for model {model_id!r} at rate {rate!r}; it has "
                             f"{list(self._tables[model_id])}")
        shape = (self._channels[model_id], *size)
        with self._lock:
            try:
                raw = self._roundtrip(model_id, list(payloads), size, rate)
                return [np.frombuffer(r, dtype=np.int32).reshape(shape) for r in raw]
            except DecoderCrashedError as e:
                if len(payloads) == 1:
                    return [e]
            results: list[np.ndarray | DecoderCrashedError] = []
            for payload in payloads:
                try:
                    (r,) = self._roundtrip(model_id, [payload], size, rate)
                    results.append(np.frombuffer(r, dtype=np.int32).reshape(shape))
                except DecoderCrashedError as e:
                    results.append(e)
            return results


class SandboxCoder:
    """A `ServerPart`'s coder decoding in a `SandboxedDecoder`'s worker process.

    Packets (checked by the part) are grouped by latent size and rate, each group decoded into
    symbols in one round trip, and the symbols dequantised here with that rate's tables
    (`FactorizedCoder.dequantize`: float32, equal to the torch decoder's y_hat).

    Args:
        sandbox: the worker, holding this model's tables.
        model_id: the encoder id its tables are held under (the packets' id).
    """

    def __init__(self, sandbox: SandboxedDecoder, model_id: str) -> None:
        self.sandbox = sandbox
        self.model_id = model_id
        self._coders = {rate: FactorizedCoder(**t) for rate, t in sandbox.tables(model_id).items()}

    def decode(self, packets: Sequence[Packet]) -> list[Any]:
        """y_hat (C, h, w) float32 per packet, or its `DecoderCrashedError` (the part's
        ``LatentCoder`` contract)."""
        groups: dict[tuple[tuple[int, int], int | None], list[int]] = {}
        for i, packet in enumerate(packets):
            groups.setdefault((packet.shape[1:], packet.rate), []).append(i)
        results: list[Any] = [None] * len(packets)
        for (size, rate), indexes in groups.items():
            symbols = self.sandbox.decode(self.model_id, [packets[i].payload for i in indexes],
                                          size, rate)
            for i, s in zip(indexes, symbols):
                results[i] = s if isinstance(s, Exception) else self._coders[rate].dequantize(s)
        return results
