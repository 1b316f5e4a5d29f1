"""The HTTP protocol of ``frankensplit serve``, shared by the server, the edge client and the CLI.

```
POST /v1/classify?topk=K&backbone=B        body: one packet (frankensplit.bitstream)
POST /v1/classify-image?topk=K&backbone=B  body: the model's input crop, JPEG/WebP/AVIF/PNG
     headers: X-Request-Id (echoed on the answer), X-Attempt (1, 2, ...: retries rank first)
200: {"model_id", "backbone", "predictions": [{"index", "name", "probability"}, ...],
      "payload_bytes", "batch_size", "decode_ms", "queue_ms", ...}     (`answer`; `decode` too)
4xx/5xx: {"detail": "one line"}
```

Torch-free (the edge client imports it); class names come from timm through
`frankensplit.backbones`, imported when asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "ATTEMPT_HEADER", "CLASSIFY_IMAGE_PATH", "CLASSIFY_PATH", "IMAGE_FORMATS", "REQUEST_ID_HEADER",
    "answer", "class_names", "is_request_id", "parse_attempt", "parse_backbone", "parse_topk",
    "predictions",
]

CLASSIFY_PATH = "/v1/classify"
CLASSIFY_IMAGE_PATH = "/v1/classify-image"  # codec offloading: the whole teacher answers
REQUEST_ID_HEADER = "X-Request-Id"  # the same on every retry of a request; echoed
ATTEMPT_HEADER = "X-Attempt"  # 1, 2, ...: a server ranks retried requests first in a full queue
IMAGE_FORMATS = ("JPEG", "WEBP", "AVIF", "PNG")  # Pillow's names

_REQUEST_ID = re.compile(r"[!-~]{1,128}")  # visible ASCII: safe to echo, bounded
_BACKBONE = re.compile(r"[a-z0-9._-]{1,128}")  # model ids and timm names: safe to echo, bounded


def _bounded(name: str, raw: str | int, high: int = 1000) -> int:
    text = str(raw)
    if not text.isdigit() or not 1 <= int(text) <= high:
        raise ValueError(f"{name} must be an integer in 1..{high}, got {text[:20]!r}")
    return int(text)


def parse_topk(raw: str | int | None, default: int = 5) -> int:
    """``topk`` (None: ``default``). Raises ValueError: not an integer in 1..1000."""
    return default if raw is None else _bounded("topk", raw)


def parse_attempt(raw: str | None) -> int:
    """The `ATTEMPT_HEADER` (None: 1). Raises ValueError: not an integer in 1..1000."""
    return 1 if raw is None else _bounded(ATTEMPT_HEADER, raw)


def parse_backbone(raw: str | None) -> str | None:
    """``backbone``, a model id or timm name (None: the default). Raises ValueError: malformed."""
    if raw is None or _BACKBONE.fullmatch(raw):
        return raw
    raise ValueError(f"backbone must be a model id or timm name (1..128 of a-z 0-9 . _ -), "
                     f"got {raw[:40]!r}")


def is_request_id(raw: str) -> bool:
    """Whether ``raw`` is a valid `REQUEST_ID_HEADER` (1..128 visible ASCII characters)."""
    return _REQUEST_ID.fullmatch(raw) is not None


def class_names(num_classes: int) -> tuple[str, ...] | None:
    """ImageNet-1k class descriptions by index, or None for another label space (only the server
    and ``decode`` name classes, with torch loaded: `frankensplit.backbones.imagenet_class_names`)."""
    if num_classes != 1000:
        return None
    from frankensplit.backbones import imagenet_class_names

    return imagenet_class_names()


def predictions(
    probabilities: Iterable[float], indexes: Iterable[int], num_classes: int,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """``[{"index", "name", "probability"}]`` in the given order (most probable first); ``names``
    the classes' names by index (None: `class_names`, which imports timm for ImageNet-1k)."""
    names = class_names(num_classes) if names is None else names
    return [{"index": int(i), "name": names[int(i)] if names else None, "probability": float(p)}
            for p, i in zip(probabilities, indexes)]


def answer(model_id: str, backbone: str | None, preds: list[dict[str, Any]], payload_bytes: int,
           batch_size: int, timing_ms: dict[str, float], **extra: Any) -> dict[str, Any]:
    """A 200 answer: ``timing_ms`` holds ``decode_ms`` (all compute), ``queue_ms`` and the
    endpoint's stage (``entropy_decode_ms`` | ``image_decode_ms``); ``extra`` its own fields
    (``encoder_id``, ``latent_shape`` | ``format``)."""
    return {"model_id": model_id, **extra, "backbone": backbone, "predictions": preds,
            "payload_bytes": payload_bytes, "batch_size": batch_size,
            **{k: round(v, 3) for k, v in timing_ms.items()}}
