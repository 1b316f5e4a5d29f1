"""The zoo's index: model ids -> entries (teacher, architecture, weights file), without torch.

Read by ``frankensplit models`` and by every command's ``--help`` (the default model id), which
must start without torch; :mod:`frankensplit.models.zoo` builds and loads the models it lists.
An entry is data: ``frankensplit/zoo/index.json`` for trained weights, plus the architecture-only
``*-untrained`` ids registered below.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from frankensplit.registry import Registry

__all__ = [
    "MODELS",
    "ZOO_DIR",
    "ModelEntry",
    "default_model_id",
    "entry_dict",
    "file_sha256",
    "list_models",
]

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"


@dataclass(frozen=True)
class ModelEntry:
    """One zoo model.

    Attributes:
        model_id: stable id written into every packet.
        teacher: timm name of the backbone.
        encoder: ``ENCODERS`` id.
        entropy: ``ENTROPY_MODELS`` id.
        latent_channels: channels of y.
        weights: codec weights file name inside ``ZOO_DIR`` (None: random codec weights).
        sha256: checksum of the weights file, verified at load.
        lmbda: rate weight it was trained with.
        config: the training config (path relative to the repo) that produced it.
        description: one line for ``frankensplit models``.
        metrics: measured figures recorded at training time (informational).
        decoder: ``DECODERS`` id of g_s ("blueprint": the family's FrankenSplit blueprint).
        split_reduction: stride of the teacher's split (None: FrankenSplit's split point; 4:
            Entropic Student's).
        input_size: side of the edge encoder's square input when not the teacher's (encoder
            reuse: the source model's), with ``crop_pct`` its centre crop.
        crop_pct: see ``input_size``.
        reuses: id of the model whose edge encoder and entropy model this one shares (encoder
            reuse: its packets name that id, and one packet serves every backbone whose
            decoder reuses it); None: its own. Its ``input_size``/``crop_pct`` are the source's.
    """

    model_id: str
    teacher: str
    encoder: str = "frankensplit"
    entropy: str = "factorized"
    latent_channels: int = 48
    weights: str | None = None
    sha256: str | None = None
    lmbda: float | None = None
    config: str | None = None
    description: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    decoder: str = "blueprint"
    split_reduction: int | None = None
    input_size: int | None = None
    crop_pct: float | None = None
    reuses: str | None = None

    @property
    def trained(self) -> bool:
        """Whether shipped codec weights exist (otherwise the codec is randomly initialised)."""
        return self.weights is not None


MODELS: Registry[ModelEntry] = Registry("model id")

#: Architecture-only ids: random (seeded) codec with the real or random teacher.
_UNTRAINED = {
    "fs-lite0-untrained": "tf_efficientnet_lite0",
    "fs-lite1-untrained": "tf_efficientnet_lite1",
    "fs-lite2-untrained": "tf_efficientnet_lite2",
    "fs-swin-s3-base-untrained": "swin_s3_base_224",
    "fs-convnext-tiny-untrained": "convnext_tiny",
    "fs-resnet50-untrained": "resnet50",
}
for _id, _teacher in _UNTRAINED.items():
    MODELS.register(_id)(
        ModelEntry(_id, _teacher, description=f"random codec weights, teacher {_teacher}")
    )
#: The Entropic Student baseline (Matsubara et al., WACV 2022) on lite0: its 24-channel GDN encoder
#: and decoder replace the teacher up to its stride-4 stage (``blocks.1``, 24 x 56 x 56).
MODELS.register("es-lite0-untrained")(ModelEntry(
    "es-lite0-untrained", "tf_efficientnet_lite0", encoder="entropic_student", latent_channels=24,
    decoder="entropic_student", split_reduction=4,
    description="Entropic Student baseline, random codec weights, teacher tf_efficientnet_lite0",
))


def _register_index(index: Path = ZOO_DIR / "index.json") -> None:
    if not index.is_file():
        return
    for raw in json.loads(index.read_text())["models"]:
        MODELS.register(raw["model_id"])(ModelEntry(**raw))


_register_index()


def list_models() -> list[str]:
    """All model ids."""
    return MODELS.names()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def entry_dict(entry: ModelEntry) -> dict[str, Any]:
    """A zoo entry as plain data (for ``index.json`` and ``frankensplit models --json``)."""
    return asdict(entry)


#: The model the CLI and demo use when none is named: the shipped lite0 model recorded in
#: ``index.json`` as the default, or the untrained lite0 architecture when none is shipped.
def default_model_id() -> str:
    """The default model id (see ``index.json``'s ``default``)."""
    index = ZOO_DIR / "index.json"
    if index.is_file():
        default = json.loads(index.read_text()).get("default")
        if default:
            return str(default)
    return "fs-lite0-untrained"
