"""The edge client: image -> packet with onnxruntime, numpy, PIL and the rANS coder; no torch.

```
image --preprocess (PIL, numpy)--> x (1,3,224,224) --g_a (onnxruntime)--> y (1,48,28,28)
      --round(y - medians), rANS (compressai's C++ coder)--> payload --bitstream.pack--> packet
packet --HTTP POST /v1/classify (urllib)--> server --> top-k JSON
```

This is what runs on the device, so its import closure is deliberately small: this module imports
only the standard library, numpy, PIL, onnxruntime and the torch-free modules ``bitstream``,
``runtime.bundle``, ``runtime.preprocess`` and ``runtime.rans``. ``tests/test_runtime_client.py``
checks in a fresh interpreter that encoding an image leaves ``torch`` out of ``sys.modules``.

The ONNX encoder's float output can differ from torch's in the last bits, so a value lying almost
exactly on a rounding boundary may round the other way; such a packet still decodes exactly (the
coder is lossless on symbols), it is just a marginally different latent. The test suite measures
how often that happens on the fixture images.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from frankensplit import bitstream
from frankensplit.runtime.bundle import EDGE_FORMAT, TABLE_NAMES, EdgeManifest, read_manifest
from frankensplit.runtime.preprocess import ImageInput, preprocess
from frankensplit.runtime.rans import FactorizedCoder

__all__ = ["CLASSIFY_PATH", "EdgeClient", "ServerError", "classify_url", "post_packet"]

CLASSIFY_PATH = "/v1/classify"


class ServerError(RuntimeError):
    """The server answered with an HTTP error; ``status`` and the server's ``detail`` are kept."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"server answered {status}: {detail}")
        self.status = status
        self.detail = detail


def classify_url(url: str, topk: int) -> str:
    """The classify endpoint for a server base URL (a URL already ending in it is kept)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"server URL must be http(s)://host[:port][/prefix], got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(CLASSIFY_PATH):
        path += CLASSIFY_PATH
    query = urllib.parse.urlencode({"topk": topk})
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class EdgeClient:
    """Encode images into packets from an exported edge bundle.

    Args:
        bundle_dir: an ``edge/`` folder written by ``frankensplit export``.
        threads: onnxruntime intra-op threads (None: onnxruntime's default, one per core).
        verify: check the bundle files' sha256 at load.

    Raises:
        ValueError: not an edge bundle, a corrupt one, or one for another bitstream version.
    """

    def __init__(
        self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True
    ) -> None:
        folder = Path(bundle_dir)
        manifest = read_manifest(folder, verify=verify)
        if manifest.format != EDGE_FORMAT:
            raise ValueError(f"{folder} is a {manifest.format}, expected an edge bundle")
        assert isinstance(manifest, EdgeManifest)
        if manifest.bitstream_version != bitstream.FORMAT_VERSION:
            raise ValueError(
                f"{folder} produces bitstream version {manifest.bitstream_version}; this build "
                f"writes version {bitstream.FORMAT_VERSION}"
            )
        tables = {n: np.load(folder / f"{n}.npy", allow_pickle=False) for n in TABLE_NAMES}
        self.manifest = manifest
        self.model_id = manifest.model_id
        self.coder = FactorizedCoder(**tables)
        if self.coder.channels != manifest.latent_channels:
            raise ValueError(
                f"{folder}: tables have {self.coder.channels} channels, manifest says "
                f"{manifest.latent_channels}"
            )
        self._session = _session(folder / manifest.encoder_file, threads)
        self._input = self._session.get_inputs()[0].name

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """Image -> x (3, crop, crop) float32, the teacher's eval preprocessing."""
        return preprocess(image, self.manifest.preprocess)

    def encode_latent(self, x: np.ndarray) -> np.ndarray:
        """Run g_a: x (N, 3, H, W) float32 -> y (N, C, H/r, W/r)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got {x.shape}")
        return self._session.run(None, {self._input: x.astype(np.float32, copy=False)})[0]

    def pack(self, y: np.ndarray) -> bytes:
        """Entropy-code one latent y (C, h, w) and frame it as a packet."""
        payload = self.coder.encode(y)
        shape = tuple(int(d) for d in y.shape)
        return bitstream.pack(bitstream.Packet(self.model_id, shape, payload))  # type: ignore[arg-type]

    def encode(self, image: ImageInput) -> bytes:
        """One image (path or PIL) -> one complete packet (header, payload, CRC)."""
        y = self.encode_latent(self.preprocess(image)[None])  # (1, C, h, w)
        return self.pack(y[0])

    def encode_batch(self, images: Sequence[ImageInput]) -> list[bytes]:
        """Several images -> packets, running g_a once on the stacked batch."""
        if not images:
            return []
        x = np.stack([self.preprocess(image) for image in images])  # (N, 3, crop, crop)
        return [self.pack(y) for y in self.encode_latent(x)]

    def classify(
        self,
        url: str,
        image: ImageInput,
        topk: int = 5,
        token: str | None = None,
        timeout: float = 30.0,
        cafile: str | Path | None = None,
    ) -> dict[str, Any]:
        """Encode ``image`` and POST the packet to a ``frankensplit serve`` server.

        Args:
            url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
            image: a path or a PIL image.
            topk: how many classes to return.
            token: bearer token, when the server requires one.
            timeout: seconds to wait for the answer.
            cafile: CA bundle (PEM) to verify an https server with, e.g. a self-signed one.

        Returns:
            The server's JSON answer (``model_id``, ``predictions``, timings), plus
            ``packet_bytes``: the size of what was sent.

        Raises:
            ServerError: the server answered with an error status (its message is kept).
            OSError: the server cannot be reached.
        """
        packet = self.encode(image)
        result = post_packet(url, packet, topk=topk, token=token, timeout=timeout, cafile=cafile)
        result["packet_bytes"] = len(packet)
        return result


def post_packet(
    url: str,
    packet: bytes,
    topk: int = 5,
    token: str | None = None,
    timeout: float = 30.0,
    cafile: str | Path | None = None,
) -> dict[str, Any]:
    """POST one packet to ``url``'s classify endpoint and return the decoded JSON answer.

    See `EdgeClient.classify` for the arguments.

    Raises:
        ServerError: an HTTP error status.
        OSError: connection failures and timeouts.
    """
    headers = {"Content-Type": "application/octet-stream", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        classify_url(url, topk), data=packet, headers=headers, method="POST"
    )
    context = ssl.create_default_context(cafile=str(cafile)) if cafile is not None else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", errors="replace")
        try:
            detail = json.loads(body).get("detail", body)
        except (json.JSONDecodeError, AttributeError):
            detail = body
        raise ServerError(e.code, str(detail)) from None
