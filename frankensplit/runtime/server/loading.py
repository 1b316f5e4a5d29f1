"""Load what the server runs: a `ServerPart` (which knows the latent shape it accepts) and, for
classifying images, the whole teacher.

A model is named either by a zoo id (``fs-lite0-untrained``, trained ids from ``zoo/index.json``)
or by a server bundle folder written by ``frankensplit export``; a bundle works for any model id,
registered in the zoo or not, because its manifest holds the model's `Architecture`.

Importing this module imports no torch (torch is imported when a torch model is loaded): a
`LoadedModel` may hold the ONNX server half instead (`runtime.server.onnx_server`), and the app
serving it must run without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from frankensplit import bitstream
from frankensplit.accepts import check_rate
from frankensplit.models.zoo_index import MODELS, ZOO_DIR, recorded_figures
from frankensplit.runtime.edge.bundle import OnnxServerManifest, ServerManifest, read_manifest

if TYPE_CHECKING:
    import numpy as np

    from frankensplit.backbones import SplitBackbone
    from frankensplit.models.split import FrankenSplit

__all__ = ["LoadedModel", "ServingPart", "load_server_model", "resolve_model_spec",
           "served_model"]


class ServingPart(Protocol):
    """What the service runs a model's packets through: `frankensplit.models.parts.ServerPart`
    (torch) or `runtime.server.onnx_server.OnnxServerPart` (ONNX Runtime, no torch).

    ``check`` a packet once (`frankensplit.accepts.Accepts`), ``decode_each`` checked packets
    through its coder into y_hat (C, h, w) each (a torch tensor or a float32 array), ``classify``
    a stack of them into logits (N, classes) of the same kind.
    """

    model_id: str

    @property
    def encoder_id(self) -> str: ...

    @property
    def latent_shape(self) -> tuple[int, int, int] | None: ...

    @property
    def rates(self) -> int | None: ...

    def check(self, packet: bitstream.Packet) -> bitstream.Packet: ...

    def decode_each(self, packets: Sequence[bitstream.Packet]) -> list[Any]: ...

    def classify(self, y_hat: Any) -> Any: ...

    def coding_tables(self) -> dict[int | None, dict[str, np.ndarray]]: ...

    def entropy_state(self) -> dict[str, np.ndarray]: ...

    def with_coder(self, coder: Any) -> ServingPart: ...

    def with_latent_shape(self, latent_shape: tuple[int, int, int] | None) -> ServingPart: ...


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve.

    Attributes:
        model_id: the model's own id (answers and metrics name it).
        part: entropy decoder, g_s and the teacher tail (`ServingPart`: torch's `ServerPart` or
            the ONNX one); it checks and decodes every packet.
        latent_shape: (C, H, W) of the packets it accepts (None: the part's,
            `ServerPart.latent_shape`; given, the part is narrowed to it); others are refused
            before decoding, so a packet cannot make the server run g_s on an arbitrarily large
            latent. None with a bare part: any size within its limits.
        teacher: timm name of the backbone whose tail it runs (None: not known, a bare part);
            clients may choose a decoder by it (``?backbone=``, `runtime.server.routing`).
        teacher_model: that whole, unsplit teacher: what classifies images on
            ``/v1/classify-image`` (None: not served for images, and the teacher's head is not
            loaded).
        rates: a variable-rate model's lambdas by rate index (`Architecture.rates`; None: one
            fixed rate, or not known for a bare part): every rate is served under this one id.
        default_rate: the rate index its edge codes at when none is named, where known (a zoo
            id's `ModelEntry.default_rate`, an in-memory model's `FrankenSplit.default_rate`);
            listed, as the rates are, and never used to decode (a packet carries its rate).
        class_names: the names of its classes by index, as answers name them (None: looked up
            for the label space, `protocol.class_names`, which imports timm; the ONNX server
            half carries its own so that it runs without torch).
        data_config: the preprocessing of those images, the model's (`FrankenSplit.data_config`:
            a reuse model's teacher takes its source encoder's input crop, as `frankensplit
            eval` measures it); required with ``teacher_model``, None without.
    """

    model_id: str
    part: ServingPart
    _: KW_ONLY  # the rest by name: several optional fields of similar types
    latent_shape: tuple[int, int, int] | None = None
    teacher: str | None = None
    teacher_model: SplitBackbone | None = None
    rates: tuple[float, ...] | None = None
    default_rate: int | None = None
    class_names: tuple[str, ...] | None = None
    data_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.teacher_model is None) != (self.data_config is None):
            raise ValueError(f"{self.model_id}: a served teacher needs the model's data_config "
                             "(its images' preprocessing) and data_config needs the teacher")
        if self.default_rate is not None:
            check_rate(self.part.rates, self.default_rate)
        if self.latent_shape is None:
            object.__setattr__(self, "latent_shape", self.part.latent_shape)
        elif tuple(self.latent_shape) != self.part.latent_shape:
            object.__setattr__(self, "part", self.part.with_latent_shape(self.latent_shape))

    @property
    def encoder_id(self) -> str:
        """The id of the packets it decodes: its own, or a reuse model's source's."""
        return self.part.encoder_id

    def describe_rates(self) -> list[dict[str, Any]] | None:
        """Its rates as ``GET /v1/models`` lists them: per rate index the lambda and, where the
        zoo index records them for this model id, dev-set top-1 and bytes per image
        (`zoo_index.recorded_figures`); None for a fixed-rate model."""
        if self.part.rates is None:
            return None
        lambdas = self.rates or (None,) * self.part.rates
        metrics = MODELS.get(self.model_id).metrics if self.model_id in MODELS else {}
        return [{"index": i, "lambda": lmbda,
                 **(recorded_figures(metrics, lmbda) if lmbda is not None else {})}
                for i, lmbda in enumerate(lambdas)]


def served_model(model: FrankenSplit) -> LoadedModel:
    """The server half of an in-memory model, accepting its latent shape at the edge's input
    size (`FrankenSplit.latent_shape`), and its whole teacher (images)."""
    part = model.server.with_latent_shape(model.latent_shape)
    return LoadedModel(model.model_id, part, teacher=model.teacher.name,
                       teacher_model=model.teacher, rates=model.rates,
                       default_rate=model.default_rate, data_config=model.data_config)


def resolve_model_spec(spec: str) -> str:
    """Check that ``spec`` names a zoo model, a server bundle or a codec file, cheaply (no
    weights loaded).

    Returns:
        "bundle", "file" (a codec file written by ``frankensplit train``) or "zoo".

    Raises:
        ValueError: neither a server bundle folder, a file nor a known model id.
    """
    path = Path(spec)
    if path.is_file() and spec not in MODELS:
        return "file"
    if path.is_dir():
        manifest = read_manifest(path, verify=False)
        if isinstance(manifest, OnnxServerManifest):
            raise ValueError(f"{path} is the ONNX server half: serve it with --onnx")
        if not isinstance(manifest, ServerManifest):
            raise ValueError(f"{path} is a {manifest.format}; serve needs a server bundle")
        return "bundle"
    MODELS.get(spec)  # raises ValueError listing the known ids
    return "zoo"


def load_server_model(
    spec: str, teacher_weights: str | Path | None = "auto", images: bool = True
) -> LoadedModel:
    """Load the server half of a zoo model id, a server bundle folder or a codec file (the
    ``best.safetensors`` of a training run: its model id and architecture are in its header).

    Only what the server runs is loaded (`zoo.load_server_part`): the entropy model, g_s and the
    teacher's tail, never g_a; the teacher's head only with ``images``.

    Args:
        spec: model id, server bundle folder or codec file.
        teacher_weights: see :func:`frankensplit.backbones.create_backbone`.
        images: also keep the whole teacher, to classify images (``/v1/classify-image``).

    Raises:
        ValueError: unknown id, bad bundle (checksums are verified) or weights that do not fit.
    """
    from frankensplit.models.zoo import file_architecture, load_server_part

    kind = resolve_model_spec(spec)
    default_rate = None  # a zoo id's entry and a bundle's manifest record it; a codec file not
    if kind == "zoo":
        entry = MODELS.get(spec)
        arch, model_id, sha256 = entry.architecture, spec, entry.sha256
        path = entry.weights and ZOO_DIR / entry.weights
        expected, default_rate = None, entry.default_rate
    elif kind == "file":
        model_id, arch = file_architecture(spec)
        path, sha256, expected = Path(spec), None, None
    else:
        folder = Path(spec)
        manifest = read_manifest(folder)
        assert isinstance(manifest, ServerManifest)
        arch, model_id, expected = manifest.architecture, manifest.model_id, manifest.latent_shape
        path, sha256 = folder / manifest.codec_file, manifest.files.get(manifest.codec_file)
        default_rate = manifest.default_rate
    part, teacher = load_server_part(arch, model_id, path, sha256, teacher_weights, images)
    if expected is not None and part.latent_shape != tuple(expected):
        raise ValueError(f"{spec}: the model takes latents {part.latent_shape}, manifest says "
                         f"{tuple(expected)}")
    return LoadedModel(model_id, part, teacher=arch.teacher, teacher_model=teacher,
                       rates=arch.rates, default_rate=default_rate,
                       data_config=None if teacher is None else arch.data_config(
                           teacher.data_config))
