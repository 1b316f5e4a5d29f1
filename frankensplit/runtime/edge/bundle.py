"""On-disk deployment bundles: what `export` writes and the client and server read.

Two folders per exported model, each with a ``manifest.json`` and nothing pickled:

```
edge/    manifest.json  encoder.onnx  quantized_cdf.npy  cdf_length.npy  offset.npy  medians.npy
server/  manifest.json  codec.safetensors
```

An int8 edge bundle (``frankensplit export --int8``) holds ``encoder_int8.onnx`` instead of
``encoder.onnx``; its manifest says ``encoder_precision: "int8"`` and records how the graph was
quantised and on what (`EncoderQuantization`). Everything else, the model id and the tables
included, is the fp32 bundle's: the server decodes the symbols it receives, whichever graph
produced them.

``frankensplit export --server-onnx`` adds a third folder, the server half as ONNX for a server
without torch (``frankensplit serve --onnx``, `OnnxServerManifest`):

```
server-onnx/  manifest.json  classifier.onnx  quantized_cdf.npy  cdf_length.npy  offset.npy
              medians.npy  class_names.json
```

A variable-rate model (`Architecture.rates`) exports ONE edge bundle for every rate: the same
encoder graph (the gain is applied by the coder, in numpy, after g_a), and per rate index ``r``
its tables, medians and gain vectors as ``<table>_r<r>.npy`` (`rate_table_file`); the manifest
lists the rates (lambdas, lowest bit rate first), says ``bitstream_version`` 2 (packets carry their
rate) and ``bundle_version`` 2, so that a build which cannot read it says so, and, where the model
has one, its ``default_rate`` (the rate index the client codes at when a call names none; the key
is left out without one). A fixed-rate bundle is written and read exactly as before (version 1).

The edge bundle is everything a device needs to produce packets the server decodes bit-exactly:
g_a as ONNX, the entropy model's *integer* CDF tables (the same tables the server's decoder reads,
so rANS coding agrees byte for byte), the medians the latent is rounded around, and the model's
preprocessing. The server bundle holds the codec weights and names the teacher, which is always
loaded from its own source (never copied into our files). Every manifest carries the model id,
the bitstream format version and a sha256 per file, verified at load.

This module is torch-free (json, dataclasses, `frankensplit.files`): the edge client imports it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from frankensplit.accepts import check_rate
from frankensplit.files import file_sha256, from_dict
from frankensplit.models.architecture import Architecture

__all__ = [
    "BUNDLE_VERSION",
    "BUNDLE_VERSIONS",
    "DEFAULT_CALIBRATION_IMAGES",
    "EDGE_FORMAT",
    "ENCODER_PRECISIONS",
    "GAIN_NAMES",
    "MANIFEST_NAME",
    "RATES_BUNDLE_VERSION",
    "SERVER_FORMAT",
    "SERVER_ONNX_FORMAT",
    "TABLE_NAMES",
    "EdgeManifest",
    "EncoderQuantization",
    "OnnxServerManifest",
    "Preprocess",
    "ServerManifest",
    "rate_table_file",
    "read_manifest",
    "write_manifest",
]

EDGE_FORMAT = "frankensplit-edge-bundle"
SERVER_FORMAT = "frankensplit-server-bundle"
SERVER_ONNX_FORMAT = "frankensplit-server-onnx-bundle"
BUNDLE_VERSION = 1  # fixed-rate edge bundles and every server bundle
RATES_BUNDLE_VERSION = 2  # an edge bundle of a variable-rate model: tables per rate
BUNDLE_VERSIONS = (BUNDLE_VERSION, RATES_BUNDLE_VERSION)  # what `read_manifest` reads
MANIFEST_NAME = "manifest.json"
#: The entropy model's tables, one ``.npy`` file each (int32 except the float32 medians).
TABLE_NAMES = ("quantized_cdf", "cdf_length", "offset", "medians")
#: A variable-rate model's gain vectors per rate (float32), beside its `TABLE_NAMES`.
GAIN_NAMES = ("gain", "inverse_gain")


def rate_table_file(name: str, rate: int | None) -> str:
    """The file of table ``name`` at rate index ``rate`` (None: a fixed-rate bundle's)."""
    return f"{name}.npy" if rate is None else f"{name}_r{rate}.npy"
_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
#: What the edge encoder graph computes in: float32 throughout, or int8 (QDQ) convolutions.
ENCODER_PRECISIONS = ("fp32", "int8")
#: Calibration images of an int8 encoder unless told otherwise (``export --calibration-images``).
#: ONNX Runtime's Percentile calibrator keeps every activation of every image until it computes
#: the ranges: about 30 MB per 224x224 image for lite0's g_a (4.1 GB peak RSS at 128 images; 1,000
#: ran out of this machine's 24 GB). 64, 128 and 256 images changed the same share of latent
#: symbols on the dev set (2.05%, 2.03%, 2.01%; docs/edge.md).
DEFAULT_CALIBRATION_IMAGES = 128


@dataclass(frozen=True)
class Preprocess:
    """The model's input preprocessing (`FrankenSplit.data_config`: the teacher's eval
    preprocessing at the model's input size), as plain numbers a device applies without
    torchvision.

    Resize the short side to ``resize`` (aspect kept), center-crop ``crop`` x ``crop``, scale to
    [0, 1], then ``(x - mean) / std`` per channel: timm's eval view, ``crop_transform(..., "eval")``.

    Attributes:
        resize: target length of the image's short side.
        crop: side of the square center crop (the model's input size).
        mean: per-channel RGB mean.
        std: per-channel RGB standard deviation.
        interpolation: "bicubic", "bilinear" or "nearest" (PIL's filters, antialiased).
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Preprocess.{name} must be a positive int, got {value!r}")
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"Preprocess.{name} must have 3 values (RGB), got {value!r}")
            object.__setattr__(self, name, value)
        if min(self.std) <= 0:
            raise ValueError(f"Preprocess.std must be positive, got {self.std!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"Preprocess.interpolation {self.interpolation!r} is not one of {_INTERPOLATIONS}"
            )

    @classmethod
    def from_data_config(cls, data_config: dict[str, Any]) -> Preprocess:
        """Derive from a timm data config with the same arithmetic as the eval crop transform."""
        size = int(data_config["input_size"][-1])
        return cls(
            resize=int(size / float(data_config.get("crop_pct", 0.875))),
            crop=size,
            mean=tuple(data_config["mean"]),
            std=tuple(data_config["std"]),
            interpolation=str(data_config.get("interpolation", "bicubic")),
        )


@dataclass(frozen=True)
class EncoderQuantization:
    """How an int8 edge encoder was made from the fp32 graph (``frankensplit export --int8``).

    Attributes:
        tool: the quantiser, e.g. "onnxruntime 1.32.0 quantize_static".
        quant_format: "QDQ" (QuantizeLinear / DequantizeLinear pairs around float ops, which
            ONNX Runtime fuses into integer kernels at load).
        weights: weight type and granularity, e.g. "int8, symmetric, per output channel".
        activations: activation type and granularity, e.g. "uint8, asymmetric, per tensor".
        calibration_method: ONNX Runtime's ``CalibrationMethod`` name ("Percentile", "MinMax").
        calibration_images: how many images the activation ranges were calibrated on.
        calibration_source: the folder they came from, as given at export (informational).
        calibration_sha256: sha256 over the calibration images, in the order used: of the
            lines ``"<file name> <sha256 of its bytes>\n"``, so the set is identified exactly.
        float_encoder_sha256: sha256 of the fp32 ONNX graph that was quantised.
        float_nodes: graph nodes left in float32 (those producing the output y: the latent is
            rounded to symbols next, and an 8-bit grid on y itself would add error there).
        latent_rms_error: RMS of y(int8) - y(fp32) on calibration images at export, in units of
            the symbol step; a variable-rate model's at its worst rate, where the step
            (``1 / gain``) is smallest (export refuses a graph above 0.5).
    """

    tool: str
    quant_format: str
    weights: str
    activations: str
    calibration_method: str
    calibration_images: int
    calibration_source: str
    calibration_sha256: str
    float_encoder_sha256: str
    float_nodes: tuple[str, ...] = ()
    latent_rms_error: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.calibration_images, int) or self.calibration_images < 1:
            raise ValueError(
                f"calibration_images must be a positive int, got {self.calibration_images!r}"
            )
        object.__setattr__(self, "float_nodes", tuple(str(n) for n in self.float_nodes))


@dataclass(frozen=True)
class EdgeManifest:
    """``edge/manifest.json``.

    Attributes:
        model_id: id written into every packet: the encoder's (for a reuse model, its source's,
            whose edge bundle this then is).
        bitstream_version: ``frankensplit.bitstream.FORMAT_VERSION`` the packets use.
        preprocess: image -> x.
        latent_channels: channels of y.
        reduction: spatial stride of g_a (the latent is crop/reduction square).
        encoder_file: the ONNX graph of g_a (input ``x`` (N, 3, crop, crop), output ``y``).
        opset: ONNX opset of the graph.
        precision: bits of the quantized CDFs (compressai's rANS uses 16).
        files: file name -> sha256, for every other file of the bundle.
        encoder_precision: "fp32" or "int8" (`ENCODER_PRECISIONS`): what the encoder graph
            computes in.
        quantization: for an int8 encoder, how it was quantised and calibrated (None for fp32).
        figures: accuracy and size recorded for this model id when it was exported, e.g.
            ``{"top1": 72.4, "bytes_per_image": 4883, "source": "zoo index metrics dev1286_*"}``
            (empty when nothing was recorded); a variable-rate bundle's hold ``"rates"``, one
            such dict per rate index (empty dicts where nothing was recorded). Measured with the
            fp32 encoder: an int8 bundle carries its fp32 model's figures. The rate-choosing
            client ranks rates by them.
        rates: a variable-rate model's lambdas, one per rate index, lowest bit rate first
            (None: one fixed rate). Its tables are per rate (`rate_table_file`).
        default_rate: the rate index a variable-rate bundle's client codes at when a call names
            none (the zoo model's, `ModelEntry.default_rate`); None: every call names one.
            Written only when set.
    """

    model_id: str
    bitstream_version: int
    preprocess: Preprocess
    latent_channels: int
    reduction: int
    encoder_file: str
    opset: int
    precision: int = 16
    files: dict[str, str] = field(default_factory=dict)
    encoder_precision: str = "fp32"
    quantization: EncoderQuantization | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    rates: tuple[float, ...] | None = None
    default_rate: int | None = None
    format: str = EDGE_FORMAT
    bundle_version: int = BUNDLE_VERSION

    def __post_init__(self) -> None:
        if self.rates is not None:
            object.__setattr__(self, "rates", tuple(float(r) for r in self.rates))
        expected = BUNDLE_VERSION if self.rates is None else RATES_BUNDLE_VERSION
        if self.bundle_version != expected:
            raise ValueError(f"an edge bundle {'with' if self.rates else 'without'} rates is "
                             f"bundle_version {expected}, got {self.bundle_version!r}")
        if self.rates is not None and len(self.rates) < 2:
            raise ValueError(f"rates must list at least 2 lambdas, got {self.rates!r}")
        _check_default_rate(self.rates, self.default_rate, "the bundle's")
        if self.encoder_precision not in ENCODER_PRECISIONS:
            raise ValueError(
                f"encoder_precision {self.encoder_precision!r} is not one of {ENCODER_PRECISIONS}"
            )
        if (self.encoder_precision == "int8") != (self.quantization is not None):
            raise ValueError(
                "an int8 encoder needs its quantization record and an fp32 one has none; got "
                f"encoder_precision {self.encoder_precision!r} with quantization "
                f"{self.quantization!r}"
            )

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of y for one preprocessed image."""
        side = self.preprocess.crop // self.reduction
        return (self.latent_channels, side, side)

    @property
    def rate_indexes(self) -> tuple[int | None, ...]:
        """The rate indexes its tables exist for: ``(None,)`` for a fixed-rate bundle."""
        return (None,) if self.rates is None else tuple(range(len(self.rates)))

    def rate_figures(self, rate: int | None) -> dict[str, Any]:
        """The recorded figures of one rate (`figures`; a fixed-rate bundle's: ``rate`` None)."""
        if rate is None:
            return self.figures
        per_rate = self.figures.get("rates") or []
        return per_rate[rate] if rate < len(per_rate) else {}


def _check_default_rate(rates: Sequence[float] | None, default_rate: int | None,
                        where: str) -> None:
    """A manifest's ``default_rate`` must be a rate index of ``rates`` (the rule packets meet,
    `accepts.check_rate`); None always fits."""
    if default_rate is None:
        return
    try:
        check_rate(None if rates is None else len(rates), default_rate)
    except ValueError as e:
        raise ValueError(f"default_rate {default_rate!r} does not fit {where} rates "
                         f"{None if rates is None else tuple(rates)!r}: {e}") from None


@dataclass(frozen=True)
class ServerManifest:
    """``server/manifest.json`` (the architecture's fields inline, as in the zoo index).

    Attributes:
        model_id: the model the packets name.
        bitstream_version: packet format version.
        architecture: what the server builds (the teacher is loaded from its own source; a reuse
            model's packets, and the edge bundle exported with it, carry its source's id).
        latent_shape: (C, H, W) of the packets this model accepts.
        codec_file: safetensors of g_a, the entropy model (with CDF tables) and g_s.
        preprocess: the edge's preprocessing, for reference.
        files: file name -> sha256.
        default_rate: a variable-rate model's rate index its edge codes at when none is named
            (`FrankenSplit.default_rate`), listed by ``/v1/models``; None: not recorded (and
            absent from the file, as in bundles written before the key).
    """

    model_id: str
    bitstream_version: int
    architecture: Architecture
    latent_shape: tuple[int, int, int]
    codec_file: str
    preprocess: Preprocess
    files: dict[str, str] = field(default_factory=dict)
    format: str = SERVER_FORMAT
    bundle_version: int = BUNDLE_VERSION
    default_rate: int | None = None

    def __post_init__(self) -> None:
        _check_default_rate(self.architecture.rates, self.default_rate, "the model's")


@dataclass(frozen=True)
class OnnxServerManifest:
    """``server-onnx/manifest.json``: the server half as ONNX, served without torch.

    ``classifier_file`` is `ServerPart.classify` as one graph, input ``y_hat`` (N, C, h, w)
    float32, output ``logits`` (N, ``num_classes``), the batch axis dynamic: g_s, then the tail.
    The entropy decoder is not in it: packets are rANS-decoded from the integer tables, medians
    (and a variable-rate model's gain vectors) stored per rate index under the edge bundle's
    file names (`rate_table_file`), exactly as the edge codes them, and a variable-rate model's
    latent is multiplied by its rate's inverse gain in numpy before the graph
    (`frankensplit.coding.FactorizedCoder.dequantize`), so one graph serves every rate.

    Attributes:
        model_id: the decoder's id (answers name it).
        bitstream_version: the packets' format version (2: they carry a rate).
        architecture: the model's (a reuse model's packets carry ``architecture.reuses``).
        latent_shape: (C, h, w) of the packets it accepts.
        classifier_file: the ONNX graph.
        opset: its ONNX opset.
        num_classes: classes of the logits.
        class_names_file: JSON list of the class names by index (None: the label space has none).
        preprocess: the edge's preprocessing, for reference.
        files: file name -> sha256.
        default_rate: as `ServerManifest`'s.
    """

    model_id: str
    bitstream_version: int
    architecture: Architecture
    latent_shape: tuple[int, int, int]
    classifier_file: str
    opset: int
    num_classes: int
    class_names_file: str | None
    preprocess: Preprocess
    files: dict[str, str] = field(default_factory=dict)
    format: str = SERVER_ONNX_FORMAT
    default_rate: int | None = None

    def __post_init__(self) -> None:
        _check_default_rate(self.architecture.rates, self.default_rate, "the model's")
    bundle_version: int = BUNDLE_VERSION

    @property
    def rate_indexes(self) -> tuple[int | None, ...]:
        """The rate indexes its tables exist for: ``(None,)`` for a fixed-rate model."""
        rates = self.architecture.rates
        return (None,) if rates is None else tuple(range(len(rates)))


def write_manifest(
    folder: str | Path, manifest: EdgeManifest | ServerManifest | OnnxServerManifest
) -> Path:
    """Write ``manifest.json`` (sorted keys, indented) into ``folder``; return its path."""
    path = Path(folder) / MANIFEST_NAME
    data = asdict(manifest)
    if isinstance(manifest, (ServerManifest, OnnxServerManifest)):
        del data["architecture"]
        data.update(manifest.architecture.to_dict())
        if data["default_rate"] is None:  # a fixed-rate model's manifest stays as before
            del data["default_rate"]
    else:
        for key in ("rates", "default_rate"):  # a fixed-rate bundle's stays version 1's, key
            if data[key] is None:  # for key, and one without a default rate as before
                del data[key]
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(
    folder: str | Path, verify: bool = True
) -> EdgeManifest | ServerManifest | OnnxServerManifest:
    """Read and validate a bundle's manifest, optionally checking every file's sha256.

    Args:
        folder: the bundle folder (``edge/`` or ``server/``).
        verify: recompute the checksums of the listed files.

    Returns:
        An `EdgeManifest`, `ServerManifest` or `OnnxServerManifest`, by the manifest's ``format``.

    Raises:
        ValueError: missing or malformed manifest, unknown format or version, missing file or
            checksum mismatch.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(f"not a frankensplit bundle: {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):  # bad file content, not a bad argument: ValueError
        raise ValueError(  # noqa: TRY004
            f"{path} must hold a JSON object, got {type(raw).__name__}"
        )
    classes = {EDGE_FORMAT: EdgeManifest, SERVER_FORMAT: ServerManifest,
               SERVER_ONNX_FORMAT: OnnxServerManifest}
    if raw.get("format") not in classes:
        raise ValueError(
            f"{path}: format {raw.get('format')!r} is not one of {sorted(classes)}"
        )
    if raw.get("bundle_version") not in BUNDLE_VERSIONS:
        raise ValueError(
            f"{path}: bundle_version {raw.get('bundle_version')!r} is not supported; this build "
            f"reads versions {', '.join(map(str, BUNDLE_VERSIONS))}"
        )
    try:
        if raw["format"] in (SERVER_FORMAT, SERVER_ONNX_FORMAT):  # the architecture inline
            architecture, raw = Architecture.split_record(raw, str(path))
            raw["architecture"] = architecture
        manifest = from_dict(classes[raw["format"]], raw, str(path))
    except TypeError as e:
        raise ValueError(f"{path}: malformed manifest: {e}") from e
    if verify:
        for name, expected in manifest.files.items():
            file = folder / name
            if Path(name).name != name or not file.is_file():
                raise ValueError(f"{folder}: bundle file {name!r} is missing")
            if (actual := file_sha256(file)) != expected:
                raise ValueError(
                    f"{file}: checksum mismatch, expected {expected}, got {actual}"
                )
    return manifest
