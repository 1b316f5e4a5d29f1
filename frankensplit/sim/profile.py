"""The device profile: measured compute times of every stage, as versioned JSON (no torch here).

``frankensplit profile`` writes one (:mod:`frankensplit.sim.measure` does the measuring);
``frankensplit simulate`` reads it to price the compute terms of the latency model. Layout,
version :data:`PROFILE_VERSION` (``STAT`` = ``{"median_ms", "p90_ms", "cpu_median_ms", "cpu_p90_ms",
"n"}``: median and 90th percentile over all timed runs, ``repeat`` per image after ``warmup``
untimed ones, pooled over the images, of the wall-clock time and of the process CPU time; on a
machine shared with other jobs the CPU time estimates the stage on an idle core, see
:data:`CLOCKS`)::

    format          "frankensplit-device-profile"
    version         2 (version 1 had no ``local`` and ``teachers``)
    created         ISO time
    machine         cpu, logical_cores, load_average_1m [before, after], platform, python, torch,
                    onnxruntime: the numbers mean nothing without them
    model_id        the FrankenSplit model timed; teacher: its timm name; input_size: crop (224)
    rate            a variable-rate model's rate timed, {index, lambda}: its packets' bytes and
                    entropy coding are that rate's; null (or absent) for a fixed-rate model
    images          file names of the photos timed; repeat, warmup: runs per image and stage
    server_threads  torch intra-op threads of every server-side stage
    frankensplit    packet_bytes: mean packet size over the images (header included)
                    edge: {backend: {g_a, entropy_encode, total: STAT}}, backend "onnx-<t>"
                          (onnxruntime from an exported edge bundle, t threads) or "torch-<t>"
                          (torch eager); entropy_encode = round + rANS + packet framing
                    server: {parse_entropy_decode, g_s, tail, total: STAT} (total = their sum
                          per run, so its median is not the sum of the medians)
    teacher_ms      forward: STAT of normalising a 224x224 crop and running the whole teacher
                    (on the server, for offloading)
    local           {backend: STAT}: local execution, the whole teacher on the edge from the
                    normalised crop (the edge encoder's input), backends as for ``edge``
                    ("onnx-<t>": the teacher exported to ONNX)
    teachers        {timm name: what-if}: larger teachers timed from their architecture-only
                    zoo entry with RANDOM weights (latency does not depend on weights; accuracy
                    does, and none is implied), each {model_id, teacher_weights: "random",
                    edge_from: the profiled model, whose g_a and packets it serves,
                    server: {parse_entropy_decode (the profiled model's packets), g_s, tail,
                    total}, teacher_ms: {forward}, local: {backend: STAT}}; {} when not asked
    codecs          {codec: [{quality, bytes (mean), encode: STAT, decode: STAT}, ...]}, each list
                    sorted by quality

Edge preprocessing (resize, crop, normalise) is not timed: both methods start from the crop.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CLOCKS",
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "WHAT_IF_TEACHERS",
    "codec_ms",
    "edge_backends",
    "format_profile",
    "load_profile",
    "median_ms",
    "profiled_setting",
    "stat",
    "validate_profile",
    "what_if_model_id",
    "write_profile",
]

PROFILE_FORMAT = "frankensplit-device-profile"
#: Bumped whenever a field changes meaning.
PROFILE_VERSION = 2

#: Which time the simulator prices a stage with: ``"wall"`` (what this machine took, waiting for a
#: core included) or ``"cpu"`` (process CPU time: the work itself; summed over threads).
CLOCKS = ("wall", "cpu")

_REQUIRED = ("machine", "model_id", "teacher", "frankensplit", "teacher_ms", "local",
             "teachers", "codecs")


#: The paper's larger teachers, ``--teachers paper``: timm name -> architecture-only zoo id.
WHAT_IF_TEACHERS: dict[str, str] = {
    "swin_s3_base_224": "fs-swin-s3-base-untrained",
    "convnext_tiny": "fs-convnext-tiny-untrained",
    "resnet50": "fs-resnet50-untrained",
}


def what_if_model_id(teacher: str) -> str:
    """The architecture-only zoo id whose blueprint decoder and tail serve ``teacher``.

    Raises:
        ValueError: no ``*-untrained`` FrankenSplit entry of the zoo has that teacher.
    """
    from frankensplit.models.zoo_index import MODELS

    for model_id in MODELS.names():
        arch = MODELS.get(model_id).architecture
        if (model_id.endswith("-untrained") and arch.teacher == teacher
                and arch.method == "frankensplit"):
            return model_id
    known = sorted({MODELS.get(m).architecture.teacher for m in MODELS.names()
                    if m.endswith("-untrained")})
    raise ValueError(f"no architecture-only zoo entry has teacher {teacher!r}; known: {known}")


def stat(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """Median and 90th percentile (nearest rank) of timings in ms.

    Raises:
        ValueError: no samples, or a negative or non-finite one.
    """
    if not samples_ms:
        raise ValueError("no timing samples")
    if any(not (math.isfinite(s) and s >= 0) for s in samples_ms):
        raise ValueError(f"timings must be finite and >= 0, got {list(samples_ms)[:5]}...")
    ordered = sorted(samples_ms)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return {"median_ms": statistics.median(ordered), "p90_ms": p90, "n": len(ordered)}


def median_ms(entry: dict[str, Any], clock: str = "wall") -> float:
    """The median of a ``STAT`` entry by ``clock`` ("wall" or "cpu").

    Raises:
        ValueError: an unknown clock.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    return float(entry["median_ms" if clock == "wall" else "cpu_median_ms"])


def validate_profile(profile: dict[str, Any], source: str = "profile") -> dict[str, Any]:
    """Check format, version and the fields the simulator reads; return the profile.

    Raises:
        ValueError: another format or version, or a missing field (named in the message).
    """
    if profile.get("format") != PROFILE_FORMAT:
        raise ValueError(f"{source} is not a device profile (format {profile.get('format')!r})")
    if profile.get("version") != PROFILE_VERSION:
        raise ValueError(
            f"{source} has profile version {profile.get('version')!r}; this build reads "
            f"version {PROFILE_VERSION}: rerun `frankensplit profile` (version 2 added local "
            "execution and --teachers)"
        )
    missing = [k for k in _REQUIRED if k not in profile]
    fs = profile.get("frankensplit", {})
    missing += [f"frankensplit.{k}" for k in ("packet_bytes", "edge", "server") if k not in fs]
    if missing:
        raise ValueError(f"{source} lacks {missing}")
    if not fs["edge"]:
        raise ValueError(f"{source} has no edge backend timings")
    for name, other in profile["teachers"].items():
        lacking = [k for k in ("model_id", "edge_from", "server", "teacher_ms", "local")
                   if k not in other]
        if lacking:
            raise ValueError(f"{source}: teachers.{name} lacks {lacking}")
    return profile


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read and validate a profile written by ``frankensplit profile``.

    Raises:
        ValueError: not JSON, or not a valid profile.
        OSError: unreadable file.
    """
    path = Path(path)
    try:
        profile = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    if not isinstance(profile, dict):
        raise ValueError(f"{path} is not a device profile")  # noqa: TRY004 - bad file content
    return validate_profile(profile, str(path))


def write_profile(profile: dict[str, Any], path: str | Path) -> Path:
    """Validate and write ``profile`` as indented JSON."""
    path = Path(path)
    validate_profile(profile, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile, indent=1) + "\n")
    return path


def profiled_setting(profile: dict[str, Any]) -> str:
    """The profiled model as evaluations name it: its id, or ``<id>@<lambda>`` for the rate a
    variable-rate model was profiled at (`zoo_index.rate_setting`)."""
    from frankensplit.models.zoo_index import rate_setting

    rate = profile.get("rate")
    return rate_setting(profile["model_id"], None if rate is None else rate["lambda"])


def edge_backends(profile: dict[str, Any]) -> list[str]:
    """Names of the edge back ends timed (``onnx-1``, ``torch-2``, ...)."""
    return list(profile["frankensplit"]["edge"])


def _interp(points: list[tuple[float, float]], x: float) -> float:
    """Piecewise-linear y(x) through ``points`` (sorted by x), held constant beyond the ends."""
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def codec_ms(
    profile: dict[str, Any], codec: str, quality: float | None = None,
    num_bytes: float | None = None, clock: str = "wall",
) -> tuple[float, float]:
    """Median (encode, decode) ms of ``codec`` at a quality, or at a file size.

    Times change little with quality, so between the profiled settings they are interpolated
    linearly and beyond them held at the nearest one (bytes, unlike times, are never
    extrapolated anywhere). Without a quality, the position is found by ``num_bytes`` on the
    profile's own bytes, which is only approximate when the profile's photos are not the
    evaluation's images.

    Raises:
        ValueError: a codec the profile did not time, or neither / both of quality and bytes.
    """
    entries = profile["codecs"].get(codec)
    if not entries:
        raise ValueError(f"the profile has no timings for codec {codec!r}; it has "
                         f"{sorted(profile['codecs'])}")
    if (quality is None) == (num_bytes is None):
        raise ValueError("codec_ms needs exactly one of quality and num_bytes")
    key = "quality" if quality is not None else "bytes"
    x = float(quality if quality is not None else num_bytes)  # type: ignore[arg-type]
    out = []
    for side in ("encode", "decode"):
        points = sorted((float(e[key]), median_ms(e[side], clock)) for e in entries)
        out.append(_interp(points, x))
    return out[0], out[1]


def _row(label: str, s: dict[str, Any], extra: str = "") -> str:
    return (f"{label:<44}{s['median_ms']:>10.2f}{s['p90_ms']:>10.2f}{s['cpu_median_ms']:>10.2f}"
            f"  {extra}")


def format_profile(profile: dict[str, Any]) -> str:
    """The profile as a plain-text table (median and p90 ms per stage)."""
    fs = profile["frankensplit"]
    m = profile["machine"]
    lines = [
        (f"device profile: {profiled_setting(profile)} (teacher {profile['teacher']}), "
         f"{len(profile['images'])} images x {profile['repeat']} runs after {profile['warmup']} "
         f"warm-up, server torch threads {profile['server_threads']}"),
        (f"CPU: {m['cpu']}, {m['logical_cores']} logical cores, load average "
         f"{m['load_average_1m'][0]} -> {m['load_average_1m'][1]}"),
        (f"{'stage':<44}{'median ms':>10}{'p90 ms':>10}{'CPU ms':>10}  (CPU: median process "
         "CPU time)"),
    ]
    for backend, t in fs["edge"].items():
        lines.append(_row(f"edge {backend}: g_a", t["g_a"]))
        lines.append(_row(f"edge {backend}: entropy encode", t["entropy_encode"]))
        lines.append(_row(f"edge {backend}: total", t["total"],
                          f"packet {fs['packet_bytes']:.0f} B"))
    for stage, label in (("parse_entropy_decode", "parse + entropy decode"), ("g_s", "g_s"),
                         ("tail", "teacher tail"), ("total", "total")):
        lines.append(_row(f"server: {label}", fs["server"][stage]))
    lines.append(_row("server: teacher forward (normalise + full)", profile["teacher_ms"]["forward"]))
    for backend, t in profile["local"].items():
        lines.append(_row(f"local {backend}: whole teacher on the edge", t))
    for name, other in profile["teachers"].items():
        lines.append(f"what-if teacher {name} ({other['model_id']}, {other['teacher_weights']} "
                     f"weights: latency only), serving {other['edge_from']}'s packets")
        for stage, label in (("parse_entropy_decode", "parse + entropy decode"), ("g_s", "g_s"),
                             ("tail", "teacher tail"), ("total", "total")):
            lines.append(_row(f"  server: {label}", other["server"][stage]))
        lines.append(_row("  server: teacher forward (normalise + full)",
                          other["teacher_ms"]["forward"]))
        for backend, t in other["local"].items():
            lines.append(_row(f"  local {backend}: whole teacher on the edge", t))
    for codec, entries in profile["codecs"].items():
        for e in entries:
            q = f"{codec} q{e['quality']:g}"
            lines.append(_row(f"codec {q}: encode (edge)", e["encode"], f"{e['bytes']:.0f} B"))
            lines.append(_row(f"codec {q}: decode (server)", e["decode"]))
    return "\n".join(lines)
