"""Measuring a device profile: every stage of both pipelines, timed on this machine.

```
edge (FrankenSplit):  x --g_a (onnxruntime | torch eager, t threads)--> y --rANS + framing--> packet
server (FrankenSplit): packet --parse + rANS--> y_hat --g_s--> h_hat --tail--> logits
offloading:           crop --codec encode--> bytes --codec decode--> x_hat --normalise + teacher-->
local execution:      x --the whole teacher on the edge (onnxruntime | torch eager, t threads)-->
```

Larger what-if teachers (their server side and local execution, random weights) are timed by
:mod:`frankensplit.sim.measure_teachers`. A variable-rate model is profiled at one rate index
(``rate``): g_a, g_s and the tail do not depend on it, the entropy coding and the packet do.

Each stage is timed alone, per image, ``warmup`` untimed runs then ``repeat`` timed ones, with
``time.perf_counter``; the result is the profile of :mod:`frankensplit.sim.profile`. The ONNX
encoder comes from an edge bundle exported from the very model being timed, so both back ends run
the same weights. Torch stages run under ``torch.no_grad`` with the stated intra-op threads.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from frankensplit.codecs import create_codec
from frankensplit.data import crop_transform, load_image, normalize_transform
from frankensplit.models.split import FrankenSplit, check_rate
from frankensplit.sim.measure_teachers import check_same_edge, measure_local, measure_what_if
from frankensplit.sim.profile import PROFILE_FORMAT, PROFILE_VERSION
from frankensplit.sim.timing import Samples, cpu_name, time_ms
from frankensplit.threads import torch_threads

__all__ = ["PROFILE_QUALITIES", "Samples", "cpu_name", "measure_profile", "time_ms"]

#: Qualities profiled per codec by default: low, middle and high (jxl: butteraugli distances).
PROFILE_QUALITIES: dict[str, tuple[float, ...]] = {
    "jpeg": (5.0, 30.0, 90.0), "webp": (5.0, 30.0, 90.0), "avif": (5.0, 30.0, 90.0),
    "jxl": (12.0, 3.0, 0.5),
}


def _edge_onnx(bundle: Path, model_id: str, xs: Sequence[torch.Tensor], threads: int,
               repeat: int, warmup: int, rate: int | None) -> dict[str, Any]:
    from frankensplit.runtime.edge.client import EdgeClient

    client = EdgeClient(bundle, threads=threads)
    if client.model_id != model_id:
        raise ValueError(f"edge bundle {bundle} is for model {client.model_id!r}, not {model_id!r}")
    g_a, entropy = Samples(), Samples()
    for x_torch in xs:
        x = x_torch.numpy()  # (1, 3, 224, 224): the same input as the torch back end
        g_a += time_ms(partial(client.encode_latent, x), repeat, warmup)
        y = client.encode_latent(x)[0]  # (C, h, w)
        entropy += time_ms(partial(client.pack, y, rate), repeat, warmup)
    return {"g_a": g_a.stat(), "entropy_encode": entropy.stat(), "total": (g_a + entropy).stat()}


def _edge_torch(model: FrankenSplit, xs: Sequence[torch.Tensor], threads: int, repeat: int,
                warmup: int, rate: int | None) -> dict[str, Any]:
    with torch_threads(threads):
        return _edge_torch_timed(model, xs, repeat, warmup, rate)


def _edge_torch_timed(model: FrankenSplit, xs: Sequence[torch.Tensor], repeat: int,
                      warmup: int, rate: int | None) -> dict[str, Any]:
    g_a, entropy, edge = Samples(), Samples(), model.edge
    for x in xs:
        g_a += time_ms(partial(model.g_a, x), repeat, warmup)
        y = model.g_a(x)  # (1, C, h, w)
        entropy += time_ms(partial(edge.pack, y, rate), repeat, warmup)  # encode's second half
    return {"g_a": g_a.stat(), "entropy_encode": entropy.stat(), "total": (g_a + entropy).stat()}


def _server(model: FrankenSplit, packets: Sequence[bytes], repeat: int,
            warmup: int) -> dict[str, Any]:
    server = model.server
    decode, g_s, tail = Samples(), Samples(), Samples()
    for packet in packets:
        y_hat = server.decode_latent([packet])  # (1, C, h, w), includes parsing the packet
        h_hat = server.g_s(y_hat)
        decode += time_ms(partial(server.decode_latent, [packet]), repeat, warmup)
        g_s += time_ms(partial(server.g_s, y_hat), repeat, warmup)
        tail += time_ms(partial(server.tail, h_hat), repeat, warmup)
    return {"parse_entropy_decode": decode.stat(), "g_s": g_s.stat(), "tail": tail.stat(),
            "total": (decode + g_s + tail).stat()}


def _teacher(model: FrankenSplit, crops: Sequence[Image.Image], repeat: int,
             warmup: int) -> Samples:
    norm = normalize_transform(model.teacher.data_config)

    def forward(crop: Image.Image) -> torch.Tensor:  # normalising is part of the server's work
        return model.teacher(norm(crop).unsqueeze(0))

    teacher = Samples()
    for crop in crops:
        teacher += time_ms(partial(forward, crop), repeat, warmup)
    return teacher


def _codecs(qualities: Mapping[str, Sequence[float]], crops: Sequence[Image.Image],
            repeat: int, warmup: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name, qs in qualities.items():
        codec = create_codec(name)
        entries = []
        for q in qs:
            enc, dec = Samples(), Samples()
            sizes = []
            for crop in crops:
                data = codec.encode(crop, q)
                sizes.append(len(data))
                enc += time_ms(partial(codec.encode, crop, q), repeat, warmup)
                dec += time_ms(partial(codec.decode, data), repeat, warmup)
            entries.append({"quality": float(q), "bytes": sum(sizes) / len(sizes),
                            "encode": enc.stat(), "decode": dec.stat()})
        out[name] = sorted(entries, key=lambda e: e["quality"])
    return out


def _machine(load_before: float) -> dict[str, Any]:
    import onnxruntime

    return {
        "cpu": cpu_name(), "logical_cores": os.cpu_count(),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
    }


@torch.no_grad()
def measure_profile(
    model: FrankenSplit,
    images: Sequence[str | Path],
    threads: Sequence[int] = (1, 2),
    repeat: int = 5,
    warmup: int = 1,
    codecs: Mapping[str, Sequence[float]] | None = None,
    server_threads: int | None = None,
    bundle: str | Path | None = None,
    what_if: Sequence[FrankenSplit] = (),
    rate: int | None = None,
) -> dict[str, Any]:
    """Time every stage on ``images`` and return the device profile (a JSON-ready dict).

    Args:
        model: the FrankenSplit model (eval mode, CDF tables built).
        images: photos; each is resized and centre-cropped to the teacher's input.
        threads: intra-op thread counts of the edge back ends (onnxruntime and torch eager).
        repeat: timed runs per image and stage.
        warmup: untimed runs before them.
        codecs: codec -> qualities (default: :data:`PROFILE_QUALITIES` of the available codecs).
        server_threads: torch threads of the server stages (None: torch's current setting).
        bundle: an edge bundle of this model (None: exported to a temporary folder first).
        what_if: architecture-only models of larger teachers (random weights) whose server side
            and local execution to time on this model's packets (``profile["teachers"]``).
        rate: a variable-rate model's rate index: its packets are coded, sent and decoded at
            that rate (``profile["rate"]``); None for a fixed-rate model, and for a variable-rate
            one its `FrankenSplit.default_rate`.

    Raises:
        ValueError: no images, a non-positive repeat, thread count or warm-up below 0, a
            bundle exported from another model, or a rate the model does not have.
    """
    if not images:
        raise ValueError("profile needs at least one image")
    if repeat < 1 or warmup < 0 or not threads or min(threads) < 1:
        raise ValueError(f"need repeat >= 1, warmup >= 0 and threads >= 1, got repeat={repeat}, "
                         f"warmup={warmup}, threads={list(threads)}")
    rate = check_rate(model.entropy, rate, model.default_rate)
    for other in what_if:  # before any timing: a wrong teacher fails at once
        check_same_edge(model, other)
    load_before = os.getloadavg()[0]
    server_threads = server_threads or torch.get_num_threads()
    config = model.data_config
    crops = [crop_transform(config)(load_image(p)) for p in images]
    xs = [normalize_transform(config)(c).unsqueeze(0) for c in crops]  # each (1, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        edge_dir = Path(bundle) if bundle else _export(model, tmp)
        edge = {f"onnx-{t}": _edge_onnx(edge_dir, model.encoder_id, xs, t, repeat, warmup, rate)
                for t in threads}
    edge |= {f"torch-{t}": _edge_torch(model, xs, t, repeat, warmup, rate) for t in threads}
    with torch_threads(server_threads):
        packets = [model.edge.encode(x, rate)[0] for x in xs]
        teacher = _teacher(model, crops, repeat, warmup)
        server = _server(model, packets, repeat, warmup)
    local = measure_local(model.teacher, xs, threads, repeat, warmup)
    teachers = {other.teacher.name: measure_what_if(
        model, other, xs, crops, packets, threads, repeat, warmup, server_threads)
        for other in what_if}
    return {
        "format": PROFILE_FORMAT, "version": PROFILE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": _machine(load_before),
        "model_id": model.model_id, "teacher": model.teacher.name,
        "rate": None if rate is None else {"index": rate, "lambda": model.rates[rate]},
        "input_size": list(crops[0].size), "images": [Path(p).name for p in images],
        "repeat": repeat, "warmup": warmup, "server_threads": server_threads,
        "frankensplit": {
            "packet_bytes": sum(len(p) for p in packets) / len(packets),
            "edge": edge,
            "server": server,
        },
        "teacher_ms": {"forward": teacher.stat()},
        "local": local,
        "teachers": teachers,
        "codecs": _codecs(codecs if codecs is not None else _default_codecs(), crops, repeat,
                          warmup),
    }


def _export(model: FrankenSplit, folder: str) -> Path:
    from frankensplit.runtime.edge.export import export_edge

    export_edge(model, folder)
    return Path(folder)


def _default_codecs() -> dict[str, tuple[float, ...]]:
    from frankensplit.codecs import available_codecs

    return {name: qs for name, qs in PROFILE_QUALITIES.items() if name in available_codecs()}
