"""Export a FrankenSplit model into an edge bundle and a server bundle (see ``runtime/edge/bundle.py``).

The edge bundle gets g_a as ONNX (dynamic batch, fixed spatial size = the model's crop), the
factorized prior's integer CDF tables and medians as ``.npy``, and the preprocessing; the server
bundle gets the codec weights as safetensors and the teacher's name. Nothing is pickled.

The ONNX graph is produced by torch's TorchScript-based exporter (``dynamo=False``): g_a is a plain
stack of convolutions, which that exporter handles without the extra ``onnxscript`` dependency the
dynamo exporter needs. Every export is checked by running the graph in onnxruntime against torch.

With ``int8=Int8Calibration(folder, images)`` the edge bundle's encoder is a static int8 copy of
that graph (``runtime/edge/quantize.py``: ONNX Runtime's ``quantize_static``, QDQ, per-channel weights,
calibrated on images of ``folder`` with the model's preprocessing), checked against the fp32
graph on calibration images; the manifest records precision, calibration and checksums.

A variable-rate model (`Architecture.rates`) exports one edge bundle for all its rates: one
ONNX g_a (the gain is the coder's, applied in numpy, so the graph is the fixed-rate one) and per
rate its tables, medians and gain vectors (`runtime.edge.bundle.rate_table_file`); its server bundle
is the usual one (the architecture holds the rates).

With ``server_onnx`` (``frankensplit export --server-onnx``) a third folder holds the server half
as ONNX for a server without torch (``frankensplit serve --onnx``): `ServerPart.classify` (g_s +
tail) as one graph from y_hat to logits with a dynamic batch axis, the edge bundle's coding tables
and the class names (`export_server_onnx`). A variable-rate model's graph is its fixed-rate one:
the inverse gain is applied by the coder, in numpy, like the edge's gain.

A reuse model (``reuses``: another model's encoder, `FrankenSplit.encoder_id`) exports like any
other: its server bundle holds its own g_s and names its source, and its edge bundle is its
source's encoder, tables and preprocessing under the source's id, so its packets are the source's.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from frankensplit import bitstream, protocol
from frankensplit.files import file_sha256
from frankensplit.models.codec_file import save_codec
from frankensplit.models.split import FrankenSplit, ServerPart
from frankensplit.models.zoo import MODELS, create_model
from frankensplit.models.zoo_index import rate_figures, recorded_figures
from frankensplit.runtime.edge.bundle import (
    BUNDLE_VERSION,
    GAIN_NAMES,
    RATES_BUNDLE_VERSION,
    TABLE_NAMES,
    EdgeManifest,
    OnnxServerManifest,
    Preprocess,
    ServerManifest,
    rate_table_file,
    write_manifest,
)
from frankensplit.runtime.edge.quantize import DEFAULT_CALIBRATION_IMAGES, calibration_images
from frankensplit.threads import seeded

__all__ = ["DEFAULT_OPSET", "ExportResult", "Int8Calibration", "export_bundle", "export_edge",
           "export_model", "export_server", "export_server_onnx", "recorded_figures"]

DEFAULT_OPSET = 17
_ONNX_FILE = "encoder.onnx"
_INT8_FILE = "encoder_int8.onnx"
#: An int8 graph whose latent is further than this (RMS, symbol steps) from fp32's is refused.
_INT8_MAX_RMS = 0.5
#: Calibration images the export check of an int8 graph runs on (a subset of the calibration set).
_INT8_CHECK_IMAGES = 8
_CODEC_FILE = "codec.safetensors"
_CLASSIFIER_FILE = "classifier.onnx"
_CLASS_NAMES_FILE = "class_names.json"
#: Largest |onnxruntime - torch| accepted on the export check (float32 conv reordering is ~1e-6).
_ONNX_ATOL = 1e-4
#: The same for the logits of g_s + tail (fs-lite0-l4: about 5e-6 on logits of magnitude 8).
_LOGITS_ATOL = 1e-4


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
    """Where `export_bundle` wrote the bundles (``server_onnx_dir``: None when not asked for)."""

    edge_dir: Path
    server_dir: Path
    server_onnx_dir: Path | None = None


def _export_onnx(module: torch.nn.Module, x: torch.Tensor, path: Path, opset: int,
                 names: tuple[str, str] = ("x", "y")) -> None:
    """``module`` as ONNX, input and output ``names``, both with a dynamic batch axis."""
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        # shape checks in forward (a blueprint's) are traced as constants: right, since only the
        # batch axis varies, and the graph is checked against torch after export
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module, (x,), str(path), dynamo=False, opset_version=opset,
            input_names=[names[0]], output_names=[names[1]],
            dynamic_axes={name: {0: "batch"} for name in names},
        )


def _check_onnx(path: Path, x: torch.Tensor, y: torch.Tensor, what: str = "g_a",
                atol: float = _ONNX_ATOL) -> None:
    """Run the exported graph on ``x`` (batch of 2, so the dynamic batch axis is exercised)."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y_onnx = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    error = float(np.abs(y_onnx - y.numpy()).max())
    if y_onnx.shape != tuple(y.shape) or error > atol:
        raise RuntimeError(
            f"ONNX export of {what} disagrees with torch: shape {y_onnx.shape} vs "
            f"{tuple(y.shape)}, max abs error {error:.3g} (tolerance {atol})"
        )


def _write_tables(model: FrankenSplit, folder: Path) -> list[str]:
    """The integer rANS tables and medians (and a variable-rate model's gain vectors) per rate,
    one ``.npy`` each (`rate_table_file`); returns the file names. The edge bundle and the ONNX
    server half write the same files, so both code with the same tables."""
    files = []
    for rate, tables in model.server.coding_tables().items():  # {None: ...}: one fixed rate
        for name in (*TABLE_NAMES, *(GAIN_NAMES if rate is not None else ())):
            dtype = np.int32 if name in ("quantized_cdf", "cdf_length", "offset") else np.float32
            files.append(rate_table_file(name, rate))
            np.save(folder / files[-1], tables[name].astype(dtype), allow_pickle=False)
    return files


def _quantize(folder: Path, int8: Int8Calibration, preprocess: Preprocess,
              model: FrankenSplit) -> Any:
    """fp32 ``encoder.onnx`` -> ``encoder_int8.onnx`` (the fp32 file is removed); the record.

    The latent's error is measured in symbol steps at every rate (a variable-rate model's step
    is ``1 / gain[r]``), and the worst rate's is checked and recorded."""
    from frankensplit.runtime.edge.preprocess import preprocess as prepare
    from frankensplit.runtime.edge.quantize import latent_error, quantize_encoder

    images = list(int8.paths)
    record = quantize_encoder(folder / _ONNX_FILE, folder / _INT8_FILE, images, preprocess,
                              source=int8.folder)
    x = np.stack([prepare(p, preprocess) for p in images[:_INT8_CHECK_IMAGES]])  # (n, 3, c, c)
    rates = model.rates
    gains = () if rates is None else [t["gain"] for t in model.server.coding_tables().values()]
    errors = latent_error(folder / _ONNX_FILE, folder / _INT8_FILE, x, gains)
    worst = int(np.argmax(errors))
    error = errors[worst]
    if not np.isfinite(error) or error > _INT8_MAX_RMS:
        at = ""
        if rates is not None:
            within = [str(r) for r, e in enumerate(errors) if e <= _INT8_MAX_RMS]
            at = (f" at rate {worst} (lambda {rates[worst]:g}; rates within the limit: "
                  f"{', '.join(within) or 'none'})")
        raise RuntimeError(
            f"the int8 encoder's latent is {error:.3g} symbol steps (RMS) from the fp32 one's"
            f"{at} on calibration images (limit {_INT8_MAX_RMS}): quantisation failed for this "
            "model"
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
    """Write the edge bundle of ``model`` into ``folder`` (created if needed); a variable-rate
    model's manifest lists its rates and its `FrankenSplit.default_rate` where it has one.

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
    quantization = None if int8 is None else _quantize(folder, int8, preprocess, model)
    encoder_file = _ONNX_FILE if int8 is None else _INT8_FILE

    files = [encoder_file, *_write_tables(model, folder)]
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
        default_rate=model.default_rate,
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
        bitstream_version=bitstream.FORMAT_VERSION if model.rates is None
        else bitstream.RATE_VERSION,
        architecture=model.architecture,
        latent_shape=model.latent_shape,  # derived from the architecture, as the server does
        codec_file=_CODEC_FILE,
        preprocess=preprocess,
        files={_CODEC_FILE: file_sha256(folder / _CODEC_FILE)},
        default_rate=model.default_rate,
    )
    write_manifest(folder, manifest)
    return manifest


class _Classify(torch.nn.Module):
    """`ServerPart.classify` (g_s, then the tail) as the module that is exported."""

    def __init__(self, part: ServerPart) -> None:
        super().__init__()
        self.part = part

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.part.classify(y_hat)  # (N, C, h, w) -> (N, classes)


def export_server_onnx(
    model: FrankenSplit, folder: str | Path, opset: int = DEFAULT_OPSET
) -> OnnxServerManifest:
    """Write the server half of ``model`` as ONNX (``serve --onnx``, `OnnxServerManifest`).

    The graph is `ServerPart.classify`, checked against torch on two latents of the accepted
    shape; beside it the coding tables (`_write_tables`, as in the edge bundle) and the class
    names, so that a server decodes and names its answers without torch or timm.

    Raises:
        ValueError: an opset below 17.
        RuntimeError: the exported graph disagrees with torch.
    """
    if opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be >= {DEFAULT_OPSET}, got {opset}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    part = model.server
    with seeded(0):  # symbols around 0, as decoded latents are (medians added)
        y_hat = torch.round(3 * torch.randn(2, *model.latent_shape))
    with torch.no_grad():
        logits = part.classify(y_hat)  # (2, classes)
    # eval(): the exporter puts a module back in its mode afterwards, and a new module is in
    # training mode, which would leave the model's g_s and tail there (batch-statistics BN)
    _export_onnx(_Classify(part).eval(), y_hat, folder / _CLASSIFIER_FILE, opset,
                 ("y_hat", "logits"))
    _check_onnx(folder / _CLASSIFIER_FILE, y_hat, logits, "g_s + tail", _LOGITS_ATOL)
    files = [_CLASSIFIER_FILE, *_write_tables(model, folder)]
    names = protocol.class_names(int(logits.shape[1]))
    if names is not None:
        (folder / _CLASS_NAMES_FILE).write_text(json.dumps(list(names), indent=0) + "\n")
        files.append(_CLASS_NAMES_FILE)
    manifest = OnnxServerManifest(
        model_id=model.model_id,
        bitstream_version=bitstream.FORMAT_VERSION if model.rates is None
        else bitstream.RATE_VERSION,
        architecture=model.architecture,
        latent_shape=model.latent_shape,
        classifier_file=_CLASSIFIER_FILE,
        opset=opset,
        num_classes=int(logits.shape[1]),
        class_names_file=_CLASS_NAMES_FILE if names is not None else None,
        preprocess=Preprocess.from_data_config(model.data_config),
        files={name: file_sha256(folder / name) for name in files},
        default_rate=model.default_rate,
    )
    write_manifest(folder, manifest)
    return manifest


def export_bundle(
    model: FrankenSplit,
    out: str | Path,
    opset: int = DEFAULT_OPSET,
    int8: Int8Calibration | None = None,
    figures: dict[str, Any] | None = None,
    server_onnx: bool = False,
) -> ExportResult:
    """Write ``out/edge`` and ``out/server`` for ``model`` (``int8``, ``figures``: `export_edge`),
    and with ``server_onnx`` ``out/server-onnx`` (`export_server_onnx`).

    The server bundle goes first: saving the codec rebuilds the CDF tables, and the edge (and
    the ONNX server half) must carry exactly the tables the server will decode with. An int8
    edge bundle pairs with the same server bundle as the fp32 one (same model id, same tables).
    """
    out = Path(out)
    export_server(model, out / "server")
    export_edge(model, out / "edge", opset=opset, int8=int8, figures=figures)
    if server_onnx:
        export_server_onnx(model, out / "server-onnx", opset=opset)
    return ExportResult(out / "edge", out / "server", out / "server-onnx" if server_onnx else None)


def export_model(
    model_id: str,
    out: str | Path,
    codec_weights: str | Path | None = None,
    teacher_weights: str | Path | None = "auto",
    opset: int = DEFAULT_OPSET,
    int8: Int8Calibration | None = None,
    server_onnx: bool = False,
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
    return export_bundle(model, out, opset=opset, int8=int8, figures=figures,
                         server_onnx=server_onnx)
