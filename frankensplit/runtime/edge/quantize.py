"""Static int8 quantisation of the ONNX edge encoder with ONNX Runtime's tools (export time only).

```
encoder.onnx (fp32) --quant_pre_process (shape inference, clean-up)--> --quantize_static:
    weights  int8, symmetric, one scale per output channel
    activations  uint8, asymmetric, one scale per tensor, ranges calibrated on images of a folder
                 (the model's input preprocessing, runtime.edge.preprocess), CalibrationMethod.Percentile
    format   QDQ: QuantizeLinear/DequantizeLinear pairs around the float ops
--> encoder_int8.onnx
```

The paper's encoder is a plain stack of convolutions and ReLUs, designed for this. Two choices,
made on the first 200 dev images (docs/edge.md): Percentile calibration (the 0.001st-99.999th
percentiles of each activation) changed fewer latent symbols than MinMax (2.2% against 3.0%), and
the node producing the output y stays float32 (`float_output_nodes`; 2.0% against 2.2%): y is
rounded to integer symbols next, and an 8-bit grid on y itself adds an error of up to half its
step to every element; keeping it costs a dequantised Add on a 48x28x28 tensor.

What ONNX Runtime then runs: at session creation its optimiser fuses each
DequantizeLinear -> Conv -> QuantizeLinear into one ``QLinearConv`` (MLAS's u8 x s8 integer
kernels, chosen at run time from the CPU's flags: AVX2, AVX-512 VNNI, ...) and DQ -> Add -> Q into
``QLinearAdd``; `optimized_ops` lists what a session actually runs. The server needs nothing: it decodes
whatever symbols arrive, exactly.

torch is not needed here, but the module is only used by ``frankensplit export`` (onnx and
onnxruntime's quantisation tools are imported lazily).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from frankensplit.files import file_sha256
from frankensplit.runtime.edge.bundle import (
    DEFAULT_CALIBRATION_IMAGES,
    EncoderQuantization,
    Preprocess,
)
from frankensplit.runtime.edge.preprocess import preprocess

__all__ = [
    "CALIBRATION_METHOD",
    "DEFAULT_CALIBRATION_IMAGES",
    "calibration_digest",
    "calibration_images",
    "float_output_nodes",
    "latent_error",
    "optimized_ops",
    "quantize_encoder",
]

#: ONNX Runtime's calibration method (its ``CalibrationMethod`` member name).
CALIBRATION_METHOD = "Percentile"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def calibration_images(folder: str | Path, limit: int = DEFAULT_CALIBRATION_IMAGES) -> list[Path]:
    """``limit`` images of ``folder`` (recursive), evenly spaced over its sorted file list.

    Evenly spaced rather than the first ``limit``: training folders are sorted by class
    (``n01440764_*.JPEG`` first), and the first files would all be of one class.

    Raises:
        ValueError: missing folder, a non-positive limit, or no images in it.
    """
    folder = Path(folder)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"the number of calibration images must be >= 1, got {limit!r}")
    if not folder.is_dir():
        raise ValueError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*")
                   if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(_IMAGE_SUFFIXES)}) in calibration folder {folder}")
    if len(files) <= limit:
        return files
    picks = np.linspace(0, len(files) - 1, limit).round().astype(int)
    return [files[i] for i in picks]


def calibration_digest(images: Sequence[Path]) -> str:
    """sha256 over ``"<name> <sha256 of the file>\\n"`` per image, in order (see the manifest)."""
    digest = hashlib.sha256()
    for path in images:
        digest.update(f"{Path(path).name} {file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _reader(images: Sequence[Path], config: Preprocess, input_name: str) -> Any:
    """A ``CalibrationDataReader`` feeding one preprocessed image (1, 3, crop, crop) at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class ImageReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._images: Iterator[Path] = iter(images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            path = next(self._images, None)
            return None if path is None else {input_name: preprocess(path, config)[None]}

    return ImageReader()


def float_output_nodes(model_path: str | Path) -> list[str]:
    """Names of the nodes that produce the graph's outputs (kept float32 by `quantize_encoder`)."""
    import onnx

    model = onnx.load(str(model_path))
    outputs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if outputs & set(n.output)]


def quantize_encoder(
    float_path: str | Path,
    int8_path: str | Path,
    images: Sequence[Path],
    config: Preprocess,
    source: str | Path,
    float_nodes: Sequence[str] = (),
) -> EncoderQuantization:
    """Write a static int8 (QDQ) copy of the fp32 encoder graph at ``float_path``.

    Args:
        float_path: the fp32 ONNX encoder (input ``x``, output ``y``).
        int8_path: where to write the quantised graph.
        images: calibration images (see `calibration_images`); never the evaluation set.
        config: the model's input preprocessing, applied to each calibration image.
        source: the folder the images came from (recorded, informational).
        float_nodes: more nodes to keep float32 besides the output's (an experiment's choice:
            ``benchmarks/vr_int8.py``; the export keeps only the output's).

    Returns:
        The record that goes into the edge manifest.

    Raises:
        ValueError: no calibration images.
    """
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not images:
        raise ValueError("int8 quantisation needs at least one calibration image, got none")
    float_path, int8_path = Path(float_path), Path(int8_path)
    keep_float = float_output_nodes(float_path)
    keep_float += [n for n in float_nodes if n not in keep_float]
    with tempfile.TemporaryDirectory(prefix="frankensplit-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared))
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator print()s its progress
            quantize_static(
                str(prepared), str(int8_path), _reader(images, config, _input_name(prepared)),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHOD),
                nodes_to_exclude=keep_float,
            )
    return EncoderQuantization(
        tool=f"onnxruntime {onnxruntime.__version__} quantize_static",
        quant_format="QDQ",
        weights="int8, symmetric, per output channel",
        activations="uint8, asymmetric, per tensor",
        calibration_method=CALIBRATION_METHOD,
        calibration_images=len(images),
        calibration_source=str(source),
        calibration_sha256=calibration_digest(images),
        float_encoder_sha256=file_sha256(float_path),
        float_nodes=tuple(keep_float),
    )


def _input_name(model_path: Path) -> str:
    import onnx

    return onnx.load(str(model_path)).graph.input[0].name


def _session(path: str | Path, threads: int, optimized: Path | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the "hardware-specific optimised model" warning
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def latent_error(float_path: str | Path, int8_path: str | Path, x: np.ndarray,
                 gains: Sequence[np.ndarray] = ()) -> list[float]:
    """RMS of y(int8 graph) - y(fp32 graph) on images ``x`` (N, 3, H, W), in symbol steps.

    A fixed-rate model (no ``gains``) rounds y itself, its step is 1: one value. A variable-rate
    model rounds ``y * gain[r]`` (``gains``: one (C,) vector per rate), its step at rate r is
    ``1 / gain[r]`` per channel: one value per rate, larger at the rates of larger gain.
    """
    y = [_session(p, 1).run(None, {"x": x.astype(np.float32)})[0] for p in (float_path, int8_path)]
    dy = y[1] - y[0]  # (N, C, h, w)
    scaled = [dy] if not gains else [dy * np.asarray(g)[:, None, None] for g in gains]
    return [float(np.sqrt(np.mean(d ** 2))) for d in scaled]


def optimized_ops(path: str | Path, threads: int = 1) -> Counter[str]:
    """Op types (``domain:op``) of the graph ONNX Runtime actually runs for ``path`` on this CPU.

    The session's fully optimised graph is written out and counted, e.g. ``{"com.microsoft:
    QLinearConv": 9, ...}`` for an int8 encoder whose QDQ pairs were fused into integer kernels.
    """
    import onnx

    with tempfile.TemporaryDirectory(prefix="frankensplit-opt-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        _session(path, threads, optimized)
        graph = onnx.load(str(optimized)).graph
        return Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in graph.node)
