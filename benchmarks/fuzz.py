"""Fuzz the wire-format parser and the server's entropy decoder with mutated and random packets.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/fuzz.py [--parser-cases 100000]
        [--decoder-cases 2000] [--batch 500] [--seed 0] [--budget-ms 1000]

Two targets, one contract: every hostile input ends in a `bitstream.BitstreamError` (or another
``ValueError``) or a correct result, within ``--budget-ms``, and never in another exception or a
crash of the process.

- parser: `bitstream.unpack` in this process (pure Python: an exception is the worst it can do);
- decoder: `ServerPart.decode_latent` of ``fs-lite0-untrained`` (untrained teacher, for speed).
  compressai's rANS decoder is C++ without bounds checks, so a bad input can kill the process
  rather than raise; the cases therefore run in one child process per ``--batch``, and a child
  that dies is reported with its exit code (a signal is a negative code) and the case range to
  replay with ``--replay-decoder INDEX``.

Inputs: the costliest shapes the default `Limits` admit (cases 0-3), then valid packets (mostly real edge encodings for the decoder) mutated by bit flips,
truncations, insertions, deletions, splices of two packets, header-field edits (shape, declared
length, id) with and without a recomputed CRC, forged payloads behind a valid CRC, and plain
random bytes. Case ``i`` is drawn from ``random.Random(f"{seed}:{i}")``, so any case replays
alone. Printed: counts per outcome (error class name, ``ok``), the slowest case in ms, cases over
budget, unexpected exceptions, crashes, and peak RSS (``resource.getrusage``, this process and
its largest child).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from frankensplit import bitstream  # pure Python, no torch

MODEL_ID = "fs-lite0-untrained"
_CRC = struct.Struct(">I")


def _fields(data: bytes) -> tuple[bytes, tuple[int, int, int], bytes] | None:
    """Best-effort split of a (possibly broken) stream into id, shape, payload; None if too short."""
    if len(data) < 5:
        return None
    n = data[4]
    dims = data[5 + n : 11 + n]
    if len(dims) != 6:
        return None
    shape = struct.unpack(">HHH", dims)
    pos, length = 11 + n, 0
    for i in range(5):  # LEB128, tolerant: the fuzzer only needs where the payload starts
        if pos + i >= len(data):
            return None
        length |= (data[pos + i] & 0x7F) << (7 * i)
        if not data[pos + i] & 0x80:
            pos += i + 1
            break
    else:
        return None
    return data[5 : 5 + n], shape, data[pos : pos + length]


def _reframe(model_id: bytes, shape: tuple[int, int, int], payload: bytes, length: int) -> bytes:
    """A stream with arbitrary fields (declared ``length`` may lie) and a correct CRC."""
    varint = bytearray()
    value = length
    while True:
        varint.append((value & 0x7F) | (0x80 if value >> 7 else 0))
        value >>= 7
        if not value:
            break
    body = (bitstream.MAGIC + bytes((bitstream.FORMAT_VERSION, len(model_id) & 0xFF)) + model_id
            + struct.pack(">HHH", *(d & 0xFFFF for d in shape)) + bytes(varint) + payload)
    return body + _CRC.pack(zlib.crc32(body))


def _crc_fix(data: bytes) -> bytes:
    """Recompute the trailing CRC so a mutation survives the checksum (tests what lies behind it)."""
    if len(data) < 4:
        return data
    return data[:-4] + _CRC.pack(zlib.crc32(data[:-4]))


def _dim(rng: random.Random, big: bool) -> int:
    if big:
        return rng.choice([0, 1, 2, 255, 256, 296, 4096, 4097, 65535])
    return rng.randint(1, 40)


def mutate(rng: random.Random, bases: list[bytes], channels: int, big_rate: float) -> bytes:
    """One fuzz input derived from ``bases`` (valid streams) by a randomly chosen mutation."""
    data = bytearray(rng.choice(bases))
    kind = rng.randrange(11)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data) * 8)
            data[i // 8] ^= 1 << (i % 8)
    elif kind == 1:  # truncation
        del data[rng.randrange(len(data) + 1) :]
    elif kind == 2:  # insertion
        i = rng.randrange(len(data) + 1)
        data[i:i] = rng.randbytes(rng.randint(1, 64))
    elif kind == 3:  # deletion of a slice
        i = rng.randrange(len(data))
        del data[i : i + rng.randint(1, 64)]
    elif kind == 4:  # splice: the head of one stream, the tail of another
        other = rng.choice(bases)
        data = data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]
    elif kind == 5:  # bit flips behind a recomputed CRC
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(max(1, (len(data) - 4) * 8))
            data[i // 8] ^= 1 << (i % 8)
        data = bytearray(_crc_fix(bytes(data)))
    elif kind == 6:  # random bytes, sometimes starting like a stream
        prefix = rng.choice([b"", bitstream.MAGIC, bitstream.MAGIC + b"\x01"])
        return prefix + rng.randbytes(rng.choice([0, 1, 8, 30, 200, 3000]))
    fields = _fields(bytes(data))
    if kind < 7 or fields is None:
        return bytes(data)
    model_id, shape, payload = fields
    big = rng.random() < big_rate
    if kind == 7:  # forged shape, valid CRC
        shape = (rng.choice([channels, channels, _dim(rng, big)]), _dim(rng, big), _dim(rng, big))
        return _reframe(model_id, shape, payload, len(payload))
    if kind == 8:  # declared length that lies, valid CRC
        length = rng.choice([0, 1, len(payload) - 1, len(payload) + 1, 2**20 + 1, 2**32 - 1])
        return _reframe(model_id, shape, payload, max(length, 0))
    if kind == 9:  # forged payload of any size behind a valid CRC
        size = rng.choice([0, 1, 3, 7, 8, 9, 64, len(payload), 20_000])
        fill = rng.choice([rng.randbytes(size), b"\xff" * size, b"\0" * size])
        return _reframe(model_id, shape, fill, len(fill))
    # kind 10: payload cut or extended, length and CRC consistent
    cut = payload[: rng.randrange(len(payload) + 1)] + rng.randbytes(rng.choice([0, 0, 16]))
    return _reframe(model_id, shape, cut, len(cut))


def _parser_bases() -> list[bytes]:
    rng = random.Random(1234)
    shapes = [(48, 28, 28), (1, 1, 1), (64, 256, 256), (3, 7, 5)]
    payloads = [b"", b"\x00", rng.randbytes(100), rng.randbytes(200), rng.randbytes(20_000)]
    ids = [MODEL_ID, "a", "x" * 64]
    return [bitstream.pack(bitstream.Packet(i, s, p)) for i in ids for s in shapes for p in payloads]


def _run_cases(
    target: Callable[[bytes], str], cases: range, make: Callable[[int], bytes], budget_ms: float
) -> dict:
    """Feed each case to ``target``; tally outcomes, time, and unexpected exceptions."""
    counts: Counter[str] = Counter()
    unexpected: list[str] = []
    slowest, slowest_case, over = 0.0, -1, 0
    for i in cases:
        data = make(i)
        start = time.perf_counter()
        try:
            outcome = target(data)
        except bitstream.BitstreamError as e:
            outcome = type(e).__name__
        except ValueError as e:
            outcome = f"ValueError:{type(e).__name__}"
        except Exception as e:  # noqa: BLE001 - the point is to catch what should never escape
            outcome = f"UNEXPECTED:{type(e).__name__}"
            unexpected.append(f"case {i}: {type(e).__name__}: {e}"[:300])
        ms = (time.perf_counter() - start) * 1e3
        counts[outcome] += 1
        over += ms > budget_ms
        if ms > slowest:
            slowest, slowest_case = ms, i
    return {"counts": dict(counts), "unexpected": unexpected, "slowest_ms": slowest,
            "slowest_case": slowest_case, "over_budget": over,
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def fuzz_parser(n: int, seed: int, budget_ms: float) -> dict:
    """Fuzz `bitstream.unpack` in this process."""
    bases = _parser_bases()

    def target(data: bytes) -> str:
        bitstream.unpack(data)
        return "ok"

    def make(i: int) -> bytes:
        return mutate(random.Random(f"{seed}:{i}"), bases, 48, big_rate=0.3)

    return _run_cases(target, range(n), make, budget_ms)


def _decoder_setup(seed: int) -> tuple[Callable[[bytes], str], Callable[[int], bytes]]:
    """Load the model and build the target and case maker (in the worker process)."""
    import torch

    from frankensplit.models.zoo import create_model

    torch.set_num_threads(1)
    model = create_model(MODEL_ID, teacher_weights=None)
    torch.manual_seed(seed)
    x = torch.randn(4, 3, 64, 64) * torch.tensor([0.1, 1.0, 3.0, 10.0]).view(4, 1, 1, 1)
    bases = model.edge.encode(x)  # four real encodings, latent (48, 8, 8), diverse rates
    server = model.server
    channels = server.entropy.channels

    def target(data: bytes) -> str:
        y_hat = server.decode_latent([data])
        declared = bitstream.unpack(data, server.limits).shape
        if tuple(y_hat.shape) != (1, *declared):
            raise AssertionError(f"decoded {tuple(y_hat.shape)}, declared {declared}")
        return "ok"

    # The costliest streams the default Limits admit, first: the largest latent of this model's
    # channel count, and extreme aspect ratios, with an empty and a long all-ones payload.
    h = server.limits.max_latent_elements // channels // min(server.limits.max_dim, 296)
    extremes = [
        _reframe(MODEL_ID.encode(), shape, payload, len(payload))
        for shape in ((channels, h, 296), (channels, 1, server.limits.max_dim))
        for payload in (b"", b"\xff" * 20_000)
    ]

    def make(i: int) -> bytes:
        if i < len(extremes):
            return extremes[i]
        return mutate(random.Random(f"{seed}:{i}"), bases, channels, big_rate=0.01)

    return target, make


def _worker(seed: int, start: int, stop: int, budget_ms: float) -> None:
    target, make = _decoder_setup(seed)
    setup_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = _run_cases(target, range(start, stop), make, budget_ms)
    print(json.dumps({**result, "setup_rss_kib": setup_kib}), flush=True)


def fuzz_decoder(n: int, seed: int, batch: int, budget_ms: float) -> dict:
    """Fuzz `ServerPart.decode_latent`, one child process per batch so crashes are observed."""
    total: dict = {"counts": Counter(), "unexpected": [], "slowest_ms": 0.0, "slowest_case": -1,
                   "over_budget": 0, "crashes": [], "maxrss_kib": 0, "setup_rss_kib": 0}
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        cmd = [sys.executable, __file__, "--worker", str(seed), str(start), str(stop),
               "--budget-ms", str(budget_ms)]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            total["crashes"].append(f"cases {start}..{stop - 1}: exit code {proc.returncode}; "
                                    f"stderr tail: {proc.stderr[-300:]!r}")
            continue
        part = json.loads(proc.stdout.strip().splitlines()[-1])
        total["counts"].update(part["counts"])
        total["unexpected"] += part["unexpected"]
        total["over_budget"] += part["over_budget"]
        total["maxrss_kib"] = max(total["maxrss_kib"], part["maxrss_kib"])
        total["setup_rss_kib"] = max(total["setup_rss_kib"], part["setup_rss_kib"])
        if part["slowest_ms"] > total["slowest_ms"]:
            total["slowest_ms"], total["slowest_case"] = part["slowest_ms"], part["slowest_case"]
    total["counts"] = dict(total["counts"])
    return total


def _report(name: str, n: int, result: dict, seconds: float) -> None:
    print(f"== {name}: {n} cases in {seconds:.1f} s")
    for outcome, count in sorted(result["counts"].items(), key=lambda kv: -kv[1]):
        print(f"  {outcome:<32} {count}")
    print(f"  slowest case: {result['slowest_ms']:.1f} ms (case {result['slowest_case']}); "
          f"over budget: {result['over_budget']}")
    setup = result.get("setup_rss_kib")
    after_setup = f" ({setup / 1024:.0f} MiB after loading the model)" if setup else ""
    print(f"  peak RSS: {result['maxrss_kib'] / 1024:.0f} MiB{after_setup}")
    for line in result["unexpected"][:10]:
        print(f"  UNEXPECTED {line}")
    for line in result.get("crashes", []):
        print(f"  CRASH {line}")


def main(argv: list[str] | None = None) -> int:
    """Run both fuzzers; exit 1 on any unexpected exception, crash or case over budget."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parser-cases", type=int, default=100_000)
    parser.add_argument("--decoder-cases", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500, help="decoder cases per child process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-ms", type=float, default=1000.0, help="per-input time budget")
    parser.add_argument("--replay-decoder", type=int, help="run one decoder case in-process")
    parser.add_argument("--worker", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(*args.worker, args.budget_ms)
        return 0
    if args.replay_decoder is not None:
        target, make = _decoder_setup(args.seed)
        data = make(args.replay_decoder)
        print(f"case {args.replay_decoder}: {len(data)} bytes {data[:48].hex()}...")
        print(target(data))
        return 0
    bad = 0
    for name, n, run in (
        ("parser (bitstream.unpack)", args.parser_cases,
         lambda: fuzz_parser(args.parser_cases, args.seed, args.budget_ms)),
        (f"decoder (ServerPart.decode_latent, {MODEL_ID})", args.decoder_cases,
         lambda: fuzz_decoder(args.decoder_cases, args.seed, args.batch, args.budget_ms)),
    ):
        if n <= 0:
            continue
        start = time.perf_counter()
        result = run()
        _report(name, n, result, time.perf_counter() - start)
        bad += len(result["unexpected"]) + len(result.get("crashes", [])) + result["over_budget"]
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"peak RSS: this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
          f" MiB, largest child {children / 1024:.0f} MiB")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
