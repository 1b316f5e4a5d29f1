"""Export a FrankenSplit model into an edge bundle and a server bundle (see ``runtime/edge/bundle.py``).

The edge bundle gets g_a as ONNX (dynamic batch, fixed spatial size = the teacher's crop), the
factorized prior's integer CDF tables and medians as ``.npy``, and the preprocessing; the server
bundle gets the codec weights as safetensors and the teacher's name. Nothing is pickled.

The ONNX graph is produced by torch's TorchScript-based exporter (``dynamo=False``): g_a is a plain
stack of convolutions, which that exporter handles without the extra ``onnxscript`` dependency the
dynamo exporter needs. Every export is checked by running the graph in onnxruntime against torch.

With ``int8=Int8Calibration(folder, images)`` the edge bundle's encoder is a static int8 copy of
that graph (``runtime/edge/quantize.py``: ONNX Runtime's ``quantize_static``, QDQ, per-channel weights,
calibrated on images of ``folder`` with the teacher's preprocessing), checked against the fp32
graph on calibration images; the manifest records precision, calibration and checksums.

A variable-rate model (`Architecture.rates`) exports one edge bundle for all its rates: one
ONNX g_a (the gain is the coder's, applied in numpy, so the graph is the fixed-rate one) and per
rate its tables, medians and gain vectors (`runtime.edge.bundle.rate_table_file`); its server bundle
is the usual one (the architecture holds the rates).

A reuse model (``reuses``: another model's encoder, `FrankenSplit.encoder_id`) exports like any
other: its server bundle holds its own g_s and names its source, and its edge bundle is its
source's encoder, tables and preprocessing under the source's id, so its packets are the source's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from frankensplit import bitstream
from frankensplit.files import file_sha256
from frankensplit.models.codec_file import save_codec
from frankensplit.models.split import FrankenSplit
from frankensplit.models.zoo import MODELS, create_model
from frankensplit.models.zoo_index import rate_figures, recorded_figures
from frankensplit.runtime.edge.bundle import (
    BUNDLE_VERSION,
    GAIN_NAMES,
    RATES_BUNDLE_VERSION,
    TABLE_NAMES,
    EdgeManifest,
    Preprocess,
    ServerManifest,
    rate_table_file,
    write_manifest,
)
from frankensplit.runtime.edge.quantize import DEFAULT_CALIBRATION_IMAGES, calibration_images

__all__ = ["DEFAULT_OPSET", "ExportResult", "Int8Calibration", "export_bundle", "export_edge",
           "export_model", "export_server", "recorded_figures"]

DEFAULT_OPSET = 17
_ONNX_FILE = "encoder.onnx"
_INT8_FILE = "encoder_int8.onnx"
#: An int8 graph whose latent is further than this (RMS, symbol steps) from fp32's is refused.
_INT8_MAX_RMS = 0.5
#: Calibration images the export check of an int8 graph runs on (a subset of the calibration set).
_INT8_CHECK_IMAGES = 8
_CODEC_FILE = "codec.safetensors"
#: Largest |onnxruntime - torch| accepted on the export check (float32 conv reordering is ~1e-6).
_ONNX_ATOL = 1e-4


@dataclass(frozen=True)
class Int8Calibration:
    """Ask `export_edge` for an int8 encoder, calibrated on images of ``folder``.

    The folder is listed at construction, so a bad one fails before any export work starts.

    Attributes:
        folder: a folder of training images (never the evaluation set), searched recursively.
        images: how many of them to calibrate on (evenly spaced over the sorted file list).
        paths: the images chosen (`runtime.edge.quantize.calibration_images`), set at construction.

    Raises:
        ValueError: a missing folder, one without images, or ``images`` < 1.
    """

    folder: Path
    images: int = DEFAULT_CALIBRATION_IMAGES
    paths: tuple[Path, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))
        object.__setattr__(self, "paths", tuple(calibration_images(self.folder, self.images)))


@dataclass(frozen=True)
class ExportResult:
    """Where `export_bundle` wrote the two bundles."""

    edge_dir: Path
    server_dir: Path


def _export_onnx(g_a: torch.nn.Module, x: torch.Tensor, path: Path, opset: int) -> None:
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            g_a, (x,), str(path), dynamo=False, opset_version=opset,
            input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )


def _check_onnx(path: Path, x: torch.Tensor, y: torch.Tensor) -> None:
    """Run the exported graph on ``x`` (batch of 2, so the dynamic batch axis is exercised)."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y_onnx = session.run(None, {"x": x.numpy()})[0]
    error = float(np.abs(y_onnx - y.numpy()).max())
    if y_onnx.shape != tuple(y.shape) or error > _ONNX_ATOL:
        raise RuntimeError(
            f"ONNX export of g_a disagrees with torch: shape {y_onnx.shape} vs {tuple(y.shape)}, "
            f"max abs error {error:.3g} (tolerance {_ONNX_ATOL})"
        )


def _quantize(folder: Path, int8: Int8Calibration, preprocess: Preprocess) -> Any:
    """fp32 ``encoder.onnx`` -> ``encoder_int8.onnx`` (the fp32 file is removed); the record."""
    from frankensplit.runtime.edge.preprocess import preprocess as prepare
    from frankensplit.runtime.edge.quantize import latent_error, quantize_encoder

    images = list(int8.paths)
    record = quantize_encoder(folder / _ONNX_FILE, folder / _INT8_FILE, images, preprocess,
                              source=int8.folder)
    x = np.stack([prepare(p, preprocess) for p in images[:_INT8_CHECK_IMAGES]])  # (n, 3, c, c)
    error = latent_error(folder / _ONNX_FILE, folder / _INT8_FILE, x)
    if not np.isfinite(error) or error > _INT8_MAX_RMS:
        raise RuntimeError(
            f"the int8 encoder's latent is {error:.3g} symbol steps (RMS) from the fp32 one's on "
            f"calibration images (limit {_INT8_MAX_RMS}): quantisation failed for this model"
        )
    (folder / _ONNX_FILE).unlink()
    return replace(record, latent_rms_error=round(error, 5))


def export_edge(
    model: FrankenSplit,
    folder: str | Path,
    opset: int = DEFAULT_OPSET,
    int8: Int8Calibration | None = None,
    figures: dict[str, Any] | None = None,
) -> EdgeManifest:
    """Write the edge bundle of ``model`` into ``folder`` (created if needed).

    Args:
        model: the model to export.
        folder: output folder.
        opset: ONNX opset (>= 17).
        int8: calibrate and ship a static int8 encoder instead of the fp32 one.
        figures: recorded accuracy and size of this model (see `EdgeManifest.figures`).

    Raises:
        ValueError: an opset below 17.
        TypeError: an entropy model without integer tables per rate (`ServerPart.coding_tables`).
        RuntimeError: the exported graph disagrees with torch, or the int8 graph with fp32.
    """
    if opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be >= {DEFAULT_OPSET}, got {opset}")
    if not hasattr(model.entropy, "tables"):
        raise TypeError(
            f"edge export needs a factorized-prior entropy model, got {type(model.entropy).__name__}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = Preprocess.from_data_config(model.data_config)
    g_a = model.g_a
    x = torch.randn(2, 3, preprocess.crop, preprocess.crop, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = g_a(x)  # (2, C, crop/r, crop/r)
    _export_onnx(g_a, x, folder / _ONNX_FILE, opset)
    _check_onnx(folder / _ONNX_FILE, x, y)
    if int8 is None:  # an int8 bundle re-exported in place as fp32
        (folder / _INT8_FILE).unlink(missing_ok=True)
    quantization = None if int8 is None else _quantize(folder, int8, preprocess)
    encoder_file = _ONNX_FILE if int8 is None else _INT8_FILE

    files = [encoder_file]
    for rate, tables in model.server.coding_tables().items():  # {None: ...}: one fixed rate
        for name in (*TABLE_NAMES, *(GAIN_NAMES if rate is not None else ())):
            dtype = np.int32 if name in ("quantized_cdf", "cdf_length", "offset") else np.float32
            files.append(rate_table_file(name, rate))
            np.save(folder / files[-1], tables[name].astype(dtype), allow_pickle=False)
    rates = model.rates
    manifest = EdgeManifest(
        model_id=model.encoder_id,  # a reuse model's edge is its source's: same packets, same id
        bitstream_version=bitstream.FORMAT_VERSION if rates is None else bitstream.RATE_VERSION,
        preprocess=preprocess,
        latent_channels=int(y.shape[1]),
        reduction=preprocess.crop // int(y.shape[-1]),
        encoder_file=encoder_file,
        opset=opset,
        files={name: file_sha256(folder / name) for name in files},
        encoder_precision="fp32" if int8 is None else "int8",
        quantization=quantization,
        figures=dict(figures or {}),
        rates=rates,
        bundle_version=BUNDLE_VERSION if rates is None else RATES_BUNDLE_VERSION,
    )
    write_manifest(folder, manifest)
    return manifest


def export_server(model: FrankenSplit, folder: str | Path) -> ServerManifest:
    """Write the server bundle of ``model`` (codec safetensors + manifest: its architecture).

    Args:
        model: the model to export.
        folder: output folder (created if needed).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = Preprocess.from_data_config(model.data_config)
    save_codec(model, folder / _CODEC_FILE)
    manifest = ServerManifest(
        model_id=model.model_id,
        bitstream_version=bitstream.FORMAT_VERSION,
        architecture=model.architecture,
        latent_shape=model.latent_shape,  # derived from the architecture, as the server does
        codec_file=_CODEC_FILE,
        preprocess=preprocess,
        files={_CODEC_FILE: file_sha256(folder / _CODEC_FILE)},
    )
    write_manifest(folder, manifest)
    return manifest


def export_bundle(
    model: FrankenSplit,
    out: str | Path,
    opset: int = DEFAULT_OPSET,
    int8: Int8Calibration | None = None,
    figures: dict[str, Any] | None = None,
) -> ExportResult:
    """Write ``out/edge`` and ``out/server`` for ``model`` (``int8``, ``figures``: `export_edge`).

    The server bundle goes first: saving the codec rebuilds the CDF tables, and the edge must
    carry exactly the tables the server will decode with. An int8 edge bundle pairs with the
    same server bundle as the fp32 one (same model id, same tables).
    """
    out = Path(out)
    export_server(model, out / "server")
    export_edge(model, out / "edge", opset=opset, int8=int8, figures=figures)
    return ExportResult(out / "edge", out / "server")


def export_model(
    model_id: str,
    out: str | Path,
    codec_weights: str | Path | None = None,
    teacher_weights: str | Path | None = "auto",
    opset: int = DEFAULT_OPSET,
    int8: Int8Calibration | None = None,
) -> ExportResult:
    """Create a zoo model (optionally with codec weights of your own), or the model of a codec
    file written by ``frankensplit train``, and export it.

    The zoo's recorded figures go into the edge manifest (`recorded_figures`; per rate for a
    variable-rate model), except with codec weights of your own, which the zoo never measured.

    Raises:
        ValueError: unknown model id or weights that cannot be loaded.
    """
    is_file = model_id not in MODELS and Path(model_id).is_file()  # a codec file of a train run
    entry = None if is_file else MODELS.get(model_id)
    model = create_model(model_id, teacher_weights=teacher_weights, codec_weights=codec_weights)
    figures = {}
    if codec_weights is None and entry is not None:
        figures = (recorded_figures(entry.metrics) if model.rates is None
                   else {"rates": rate_figures(entry.metrics, model.rates)})
    return export_bundle(model, out, opset=opset, int8=int8, figures=figures)
