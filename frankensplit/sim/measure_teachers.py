"""Timing whole teachers: local execution on the edge, and larger teachers' server side.

```
local execution (edge):  x --whole teacher (onnxruntime | torch eager, t threads)--> logits
what-if teacher (server): packet of the profiled model --parse + rANS--> y_hat
                          --g_s of the larger teacher's blueprint--> h_hat --its tail--> logits
offloading to it:         crop --normalise + the whole larger teacher--> logits
```

Local execution is the third way to classify on a device: no bytes, no server, the device runs the
teacher itself. It is timed on the same back ends and thread counts as the edge encoder (the
teacher exported to ONNX with torch's TorchScript exporter, and torch eager), from the same
normalised crop, so the two edge costs compare like for like.

A *what-if* teacher (Swin, ConvNeXt, ResNet-50: the paper's larger servers) is timed from its
architecture-only zoo entry (``fs-swin-s3-base-untrained``, ...) with **random weights**: latency
does not depend on the weights, accuracy does, so nothing here says anything about its accuracy.
Its edge encoder is the profiled model's (same `Architecture` encoder, entropy model and latent
channels, so the same g_a and packets): its server decodes the profiled model's real packets and
runs its own blueprint decoder g_s and tail on them.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from frankensplit.data import normalize_transform
from frankensplit.models.split import FrankenSplit
from frankensplit.sim.timing import Samples, time_ms
from frankensplit.threads import torch_threads

__all__ = ["check_same_edge", "measure_local", "measure_what_if", "what_if_model"]

def what_if_model(model_id: str, profiled: FrankenSplit) -> FrankenSplit:
    """A larger teacher's architecture-only zoo entry (``fs-swin-s3-base-untrained``, ...), random
    weights, built with the profiled model's edge: its encoder, entropy model, latent channels and
    rates. The zoo entry is a fixed-rate one; a variable-rate profiled model (the zoo default)
    sends packets with a rate, which only a server half of its own entropy model takes. Only the
    what-if model's g_s, tail and whole teacher are timed (`measure_what_if`)."""
    from dataclasses import replace

    from frankensplit.models.zoo import MODELS, load_weights

    edge = profiled.architecture
    arch = replace(MODELS.get(model_id).architecture, encoder=edge.encoder, entropy=edge.entropy,
                   latent_channels=edge.latent_channels, rates=edge.rates)
    return load_weights(arch.build(model_id, teacher_weights=None))  # seeded random codec


def check_same_edge(profiled: FrankenSplit, what_if: FrankenSplit) -> None:
    """The what-if model runs the profiled model's edge: same encoder, entropy model, latent.

    Raises:
        ValueError: another encoder, entropy model or number of latent channels.
    """
    fields = ("encoder", "entropy", "latent_channels", "rates")
    a, b = profiled.architecture, what_if.architecture
    differ = [f for f in fields if getattr(a, f) != getattr(b, f)]
    if differ:
        raise ValueError(f"{what_if.model_id} has another edge than {profiled.model_id} "
                         f"({', '.join(f'{f}: {getattr(b, f)!r} vs {getattr(a, f)!r}' for f in differ)}"
                         "): its server cannot decode the profiled model's packets")


def _export(teacher: nn.Module, x: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(teacher, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"])


def _onnx_local(path: Path, xs: Sequence[torch.Tensor], threads: int, repeat: int,
                warmup: int) -> Samples:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = Samples()
    for x in xs:
        out += time_ms(partial(session.run, None, {"x": x.numpy()}), repeat, warmup)
    return out


def measure_local(teacher: nn.Module, xs: Sequence[torch.Tensor], threads: Sequence[int],
                  repeat: int, warmup: int) -> dict[str, Any]:
    """The whole teacher on the edge: ``{"onnx-<t>": STAT, "torch-<t>": STAT}`` per thread count.

    Each ``x`` is a normalised crop (1, 3, H, W), the edge encoder's input.
    """
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "teacher.onnx"
        _export(teacher, xs[0], path)
        for t in threads:
            out[f"onnx-{t}"] = _onnx_local(path, xs, t, repeat, warmup).stat()
    for t in threads:
        with torch_threads(t):
            samples = Samples()
            for x in xs:
                samples += time_ms(partial(teacher, x), repeat, warmup)
        out[f"torch-{t}"] = samples.stat()
    return out


def measure_what_if(
    profiled: FrankenSplit, what_if: FrankenSplit, xs: Sequence[torch.Tensor],
    crops: Sequence[Image.Image], packets: Sequence[bytes], threads: Sequence[int],
    repeat: int, warmup: int, server_threads: int,
) -> dict[str, Any]:
    """One larger teacher: its server side on the profiled model's packets, the whole teacher on
    the server (offloading) and on the edge (local execution). See the module docstring."""
    check_same_edge(profiled, what_if)
    server, big = profiled.server, what_if
    norm = normalize_transform(big.teacher.data_config)
    with torch_threads(server_threads):
        decode, g_s, tail, forward = Samples(), Samples(), Samples(), Samples()
        for packet, crop in zip(packets, crops):
            y_hat = server.decode_latent([packet])  # (1, C, h, w): the profiled model's latent
            h_hat = big.g_s(y_hat)  # the larger teacher's features at its split
            decode += time_ms(partial(server.decode_latent, [packet]), repeat, warmup)
            g_s += time_ms(partial(big.g_s, y_hat), repeat, warmup)
            tail += time_ms(partial(big.serving_tail, h_hat), repeat, warmup)
            forward += time_ms(partial(lambda c: big.teacher(norm(c).unsqueeze(0)), crop),
                               repeat, warmup)
    return {
        "model_id": big.model_id, "teacher_weights": "random",
        "edge_from": profiled.model_id,
        "server": {"parse_entropy_decode": decode.stat(), "g_s": g_s.stat(), "tail": tail.stat(),
                   "total": (decode + g_s + tail).stat()},
        "teacher_ms": {"forward": forward.stat()},
        "local": measure_local(big.teacher, xs, threads, repeat, warmup),
    }
