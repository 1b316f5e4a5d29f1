"""Export a FrankenSplit model into an edge bundle and a server bundle (see ``runtime/bundle.py``).

The edge bundle gets g_a as ONNX (dynamic batch, fixed spatial size = the teacher's crop), the
factorized prior's integer CDF tables and medians as ``.npy``, and the preprocessing; the server
bundle gets the codec weights as safetensors and the teacher's name. Nothing is pickled.

The ONNX graph is produced by torch's TorchScript-based exporter (``dynamo=False``): g_a is a plain
stack of convolutions, which that exporter handles without the extra ``onnxscript`` dependency the
dynamo exporter needs. Every export is checked by running the graph in onnxruntime against torch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from frankensplit import bitstream
from frankensplit.models.entropy import FactorizedPrior
from frankensplit.models.split import FrankenSplit
from frankensplit.models.zoo import MODELS, create_model, save_codec
from frankensplit.runtime.bundle import (
    TABLE_NAMES,
    EdgeManifest,
    Preprocess,
    ServerManifest,
    sha256_file,
    write_manifest,
)

__all__ = ["DEFAULT_OPSET", "ExportResult", "export_bundle", "export_edge", "export_model",
           "export_server"]

DEFAULT_OPSET = 17
_ONNX_FILE = "encoder.onnx"
_CODEC_FILE = "codec.safetensors"
#: Largest |onnxruntime - torch| accepted on the export check (float32 conv reordering is ~1e-6).
_ONNX_ATOL = 1e-4


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


def export_edge(model: FrankenSplit, folder: str | Path, opset: int = DEFAULT_OPSET) -> EdgeManifest:
    """Write the edge bundle of ``model`` into ``folder`` (created if needed).

    Raises:
        ValueError: an opset below 17.
        TypeError: an entropy model other than the factorized prior (no integer tables).
        RuntimeError: the exported graph disagrees with torch.
    """
    if opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be >= {DEFAULT_OPSET}, got {opset}")
    if not isinstance(model.entropy, FactorizedPrior):
        raise TypeError(
            f"edge export needs a factorized-prior entropy model, got {type(model.entropy).__name__}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = Preprocess.from_data_config(model.teacher.data_config)
    g_a = model.g_a
    x = torch.randn(2, 3, preprocess.crop, preprocess.crop, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = g_a(x)  # (2, C, crop/r, crop/r)
    _export_onnx(g_a, x, folder / _ONNX_FILE, opset)
    _check_onnx(folder / _ONNX_FILE, x, y)

    tables = model.entropy.tables()
    for name in TABLE_NAMES:
        dtype = np.float32 if name == "medians" else np.int32
        np.save(folder / f"{name}.npy", tables[name].cpu().numpy().astype(dtype), allow_pickle=False)
    files = [_ONNX_FILE, *(f"{name}.npy" for name in TABLE_NAMES)]
    manifest = EdgeManifest(
        model_id=model.model_id,
        bitstream_version=bitstream.FORMAT_VERSION,
        preprocess=preprocess,
        latent_channels=int(y.shape[1]),
        reduction=preprocess.crop // int(y.shape[-1]),
        encoder_file=_ONNX_FILE,
        opset=opset,
        files={name: sha256_file(folder / name) for name in files},
    )
    write_manifest(folder, manifest)
    return manifest


def export_server(
    model: FrankenSplit, folder: str | Path, encoder: str, entropy: str
) -> ServerManifest:
    """Write the server bundle of ``model`` (codec safetensors + manifest naming the teacher).

    Args:
        model: the model to export.
        folder: output folder (created if needed).
        encoder: ``ENCODERS`` id of ``model.g_a``, for models without a recorded architecture
            (``build_model`` records it, and the record is what the manifest then names, so that
            encoder, decoder and split always come from one source).
        entropy: ``ENTROPY_MODELS`` id of ``model.entropy``, likewise.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = Preprocess.from_data_config(model.teacher.data_config)
    with torch.no_grad():
        y = model.g_a(torch.zeros(1, 3, preprocess.crop, preprocess.crop))
    save_codec(model, folder / _CODEC_FILE, metadata={"teacher": model.teacher.name})
    recorded = getattr(model, "architecture", None) or {}  # what build_model recorded
    arch = {"encoder": encoder, "entropy": entropy, "decoder": "blueprint", **recorded}
    manifest = ServerManifest(
        model_id=model.model_id,
        bitstream_version=bitstream.FORMAT_VERSION,
        teacher=model.teacher.name,
        encoder=arch["encoder"],
        entropy=arch["entropy"],
        latent_channels=int(y.shape[1]),
        latent_shape=tuple(int(d) for d in y.shape[1:]),  # type: ignore[arg-type]
        codec_file=_CODEC_FILE,
        preprocess=preprocess,
        files={_CODEC_FILE: sha256_file(folder / _CODEC_FILE)},
        decoder=arch["decoder"],
        split_reduction=arch.get("split_reduction"),
    )
    write_manifest(folder, manifest)
    return manifest


def export_bundle(
    model: FrankenSplit,
    out: str | Path,
    encoder: str = "frankensplit",
    entropy: str = "factorized",
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Write ``out/edge`` and ``out/server`` for ``model``.

    The server bundle goes first: saving the codec rebuilds the CDF tables, and the edge must
    carry exactly the tables the server will decode with.
    """
    out = Path(out)
    export_server(model, out / "server", encoder=encoder, entropy=entropy)
    export_edge(model, out / "edge", opset=opset)
    return ExportResult(out / "edge", out / "server")


def export_model(
    model_id: str,
    out: str | Path,
    codec_weights: str | Path | None = None,
    teacher_weights: str | Path | None = "auto",
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Create a zoo model (optionally with codec weights of your own) and export it.

    Raises:
        ValueError: unknown model id or weights that cannot be loaded.
    """
    entry = MODELS.get(model_id)
    model = create_model(model_id, teacher_weights=teacher_weights, codec_weights=codec_weights)
    return export_bundle(model, out, encoder=entry.encoder, entropy=entry.entropy, opset=opset)
