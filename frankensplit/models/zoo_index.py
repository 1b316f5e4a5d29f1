"""The zoo's index: model ids -> entries (architecture, weights file, figures), without torch.

Read by ``frankensplit models`` and by every command's ``--help`` (the default model id), which
must start without torch; :mod:`frankensplit.models.zoo` builds and loads the models it lists.
An entry is data: ``frankensplit/zoo/index.json`` for trained weights (each entry's
`Architecture` fields inline), plus the architecture-only ``*-untrained`` ids registered below.

An entry's ``config`` is the command that trained it; ``parent_sha256`` pins the weights that
command starts from (`frankensplit.train.parents.command_parents`), so a parent the zoo has replaced since is caught
(``tests/test_zoo_figures.py``) instead of silently training from other weights.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from frankensplit.accepts import check_rate
from frankensplit.files import from_dict
from frankensplit.models.architecture import Architecture
from frankensplit.registry import Registry

__all__ = [
    "MODELS",
    "PARENT_KEYS",
    "ZOO_DIR",
    "ModelEntry",
    "default_model_id",
    "entry_dict",
    "list_models",
    "rate_figures",
    "rate_setting",
    "recorded_figures",
]

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
#: Training config keys that name weights a run starts from (`frankensplit.sources`).
PARENT_KEYS = ("init_codec", "init_g_s")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelEntry:
    """One zoo model.

    Attributes:
        model_id: stable id written into every packet.
        architecture: what `Architecture.build` assembles for it.
        weights: codec weights file name inside ``ZOO_DIR`` (None: random codec weights).
        sha256: checksum of the weights file, verified at load.
        lmbda: rate weight it was trained with.
        config: the command that trained it: a config path relative to the repo and its
            ``--set key=value`` overrides (`frankensplit.train.parents.command_parents` reads it).
        parent_sha256: sha256 of each file that command starts from, by config key
            (``init_codec``, ``init_g_s``): the bytes of the file or git blob it names.
        description: one line for ``frankensplit models``.
        metrics: measured figures recorded at training time (informational). Training steps
            (optimizer steps of the batch its config states): ``train_steps_this_run``, the
            length of the run that ``config`` names; ``train_steps_to_checkpoint``, present
            only where the shipped (best-validation) checkpoint came before that run's end: the
            run's steps in the weights; ``train_steps_total``, the steps in the shipped weights
            over every generation of its lineage (parents' steps included, each counted once;
            ``docs/training.md``, "The shipped zoo").
        default_rate: a variable-rate model's rate index used where a caller names none
            (`FrankenSplit.default_rate`: ``model.edge.encode(x)``, ``frankensplit encode``
            without ``--rate``, its edge bundle's client); None: a rate must be named. Only a
            variable-rate architecture has one.
    """

    model_id: str
    architecture: Architecture
    weights: str | None = None
    sha256: str | None = None
    lmbda: float | None = None
    config: str | None = None
    parent_sha256: dict[str, str] = field(default_factory=dict)
    description: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    default_rate: int | None = None

    def __post_init__(self) -> None:
        rates = self.architecture.rates
        if self.default_rate is not None and rates is None:
            raise ValueError(f"{self.model_id}: default_rate {self.default_rate!r} for a "
                             "fixed-rate model; only a variable-rate one (rates) has a default")
        if self.default_rate is not None:
            try:  # the rule packets meet (accepts.check_rate)
                check_rate(len(rates), self.default_rate)  # type: ignore[arg-type]
            except ValueError as e:
                raise ValueError(f"{self.model_id}: default_rate: {e}") from None
        for key, digest in self.parent_sha256.items():
            if key not in PARENT_KEYS or not _SHA256.fullmatch(digest):
                raise ValueError(f"{self.model_id}: parent_sha256 {key!r}: {digest!r}; expected "
                                 f"one of {', '.join(PARENT_KEYS)} -> 64 lowercase hex digits")

    @property
    def trained(self) -> bool:
        """Whether shipped codec weights exist (otherwise the codec is randomly initialised)."""
        return self.weights is not None

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "zoo entry") -> ModelEntry:
        """An ``index.json`` entry (`entry_dict`'s form), strictly.

        Raises:
            ValueError: unknown keys or bad values. TypeError: values of the wrong type.
        """
        architecture, rest = Architecture.split_record(raw, where)
        return from_dict(cls, {**rest, "architecture": architecture}, where)


def entry_dict(entry: ModelEntry) -> dict[str, Any]:
    """A zoo entry as plain data, its architecture inline (``index.json``, ``models --json``);
    ``default_rate`` only where set, as ``rates`` only for a variable-rate architecture."""
    data = asdict(entry)
    del data["architecture"]
    if entry.default_rate is None:
        del data["default_rate"]
    return {"model_id": data.pop("model_id"), **entry.architecture.to_dict(), **data}


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
    MODELS.register(_id)(ModelEntry(_id, Architecture(_teacher),
                                    description=f"random codec weights, teacher {_teacher}"))
#: The Entropic Student baseline (Matsubara et al., WACV 2022) on lite0: its 24-channel GDN encoder
#: and decoder replace the teacher up to its stride-4 stage (``blocks.1``, 24 x 56 x 56).
MODELS.register("es-lite0-untrained")(ModelEntry(
    "es-lite0-untrained", Architecture(
        "tf_efficientnet_lite0", method="entropic_student", encoder="entropic_student",
        decoder="entropic_student", latent_channels=24, split_reduction=4),
    description="Entropic Student baseline, random codec weights, teacher tf_efficientnet_lite0",
))


def _register_index(index: Path = ZOO_DIR / "index.json") -> str:
    """Register the index's entries; returns its default id (see `default_model_id`)."""
    data = json.loads(index.read_text()) if index.is_file() else {"models": []}
    for i, raw in enumerate(data["models"]):
        entry = ModelEntry.from_dict(raw, f"{index}: models[{i}]")
        MODELS.register(entry.model_id)(entry)
    return str(data.get("default") or "fs-lite0-untrained")


_DEFAULT = _register_index()


def list_models() -> list[str]:
    """All model ids."""
    return MODELS.names()


def default_model_id() -> str:
    """The model the CLI and demo use when none is named: the shipped model ``index.json``
    names as its default, or the untrained lite0 architecture when none is shipped."""
    return _DEFAULT


def recorded_figures(metrics: dict[str, Any], lmbda: float | None = None) -> dict[str, Any]:
    """Top-1 and bytes per image from a zoo entry's ``metrics``, for manifests and listings.

    Takes the largest evaluation recorded as ``dev<N>_top1`` / ``dev<N>_bytes_per_image``
    (``tools/ship_model.py`` writes them); for one rate of a variable-rate model (``lmbda``), the
    keys carry it as evaluations name its setting: ``dev<N>_top1@<lambda>`` (``f"{lmbda:g}"``).
    ``{}`` when the entry has none.
    """
    suffix = "" if lmbda is None else f"@{lmbda:g}"
    sizes = [int(m.group(1)) for k in metrics
             if (m := re.fullmatch(rf"dev(\d+)_top1{re.escape(suffix)}", k))
             and f"dev{m.group(1)}_bytes_per_image{suffix}" in metrics]
    if not sizes:
        return {}
    n = max(sizes)
    top1, size = f"dev{n}_top1{suffix}", f"dev{n}_bytes_per_image{suffix}"
    return {"top1": float(metrics[top1]), "bytes_per_image": float(metrics[size]),
            "source": f"zoo index metrics {top1}, {size} ({n} images)"}


def rate_setting(model_id: str, lmbda: float | None) -> str:
    """A model at one rate as evaluations, metrics and listings name it: ``<id>@<lambda>``
    (``f"{lmbda:g}"``) for a variable-rate model's rate, the id alone for a fixed rate (None)."""
    return model_id if lmbda is None else f"{model_id}@{lmbda:g}"


def rate_figures(metrics: dict[str, Any], rates: tuple[float, ...]) -> list[dict[str, Any]]:
    """`recorded_figures` of each rate of a variable-rate model, by rate index (``{}`` where
    none is recorded)."""
    return [recorded_figures(metrics, lmbda) for lmbda in rates]
