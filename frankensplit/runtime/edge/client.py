"""The edge client: image -> packet with onnxruntime, numpy, PIL and the rANS coder; no torch.

```
image --preprocess (PIL, numpy)--> x (1,3,224,224) --g_a (onnxruntime)--> y (1,48,28,28)
      --round(y - medians), rANS (compressai's C++ coder)--> payload --bitstream.pack--> packet
packet --HTTP POST /v1/classify (urllib, retried: runtime.edge.retry)--> server --> top-k JSON
```

A variable-rate bundle (one encoder, every rate: `runtime.edge.bundle`) encodes at the rate index a
call names (``rate=``, 0 = the lowest bit rate), or without one at the bundle's ``default_rate``
(a zoo model's; a bundle without one needs the rate): g_a runs once, the coder of that rate scales
y by its gain and codes it with its tables, and the packet carries the rate (bitstream version 2).

This is what runs on the device, so its import closure is deliberately small: this module imports
only the standard library, numpy, PIL, onnxruntime and the torch-free modules ``bitstream``,
``protocol``, ``runtime.edge.bundle``, ``runtime.edge.preprocess``, ``coding`` and ``runtime.edge.retry``.
``tests/test_runtime_client.py``
checks in a fresh interpreter that encoding an image leaves ``torch`` out of ``sys.modules``.

The ONNX encoder's float output can differ from torch's in the last bits, so a value lying almost
exactly on a rounding boundary may round the other way; such a packet still decodes exactly (the
coder is lossless on symbols), it is just a marginally different latent. The test suite measures
how often that happens on the fixture images.

Sending is retried (`RetryPolicy`, default 3 retries within 60 s) on 503/502/504/429 and on
failed connections, with exponential backoff, jitter and the server's ``Retry-After``; each
request carries one client-generated ``X-Request-Id`` on every attempt, which the server echoes,
so an answer is matched to its request exactly even across retries and server restarts, and an
``X-Attempt`` number, with which the server serves retried requests first when its queue is full.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from frankensplit import bitstream
from frankensplit.accepts import describe_rates
from frankensplit.coding import FactorizedCoder
from frankensplit.protocol import ATTEMPT_HEADER, CLASSIFY_PATH, REQUEST_ID_HEADER
from frankensplit.runtime.edge.bundle import (
    EDGE_FORMAT,
    GAIN_NAMES,
    TABLE_NAMES,
    EdgeManifest,
    rate_table_file,
    read_manifest,
)
from frankensplit.runtime.edge.preprocess import ImageInput, preprocess
from frankensplit.runtime.edge.retry import (
    RetryCallback,
    RetryPolicy,
    call_with_retry,
    is_retryable,
    parse_retry_after,
)
from frankensplit.runtime.sessions import onnx_session

__all__ = ["EdgeClient", "RetryPolicy", "ServerError", "classify_url", "post_packet"]


class ServerError(RuntimeError):
    """The server answered with an HTTP error; ``status`` and the server's ``detail`` are kept.

    Also kept: ``retry_after``, the server's ``Retry-After`` in seconds (None when it sent none),
    and once known the ``request_id`` sent and the ``attempts`` made (for the message and logs).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        retry_after: float | None = None,
        request_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        context = [f"request {request_id}"] if request_id else []
        if attempts > 1:
            context.append(f"gave up after {attempts} attempts")
        suffix = f" ({', '.join(context)})" if context else ""
        super().__init__(f"server answered {status}: {detail}{suffix}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.request_id = request_id
        self.attempts = attempts


def classify_url(
    url: str, topk: int, backbone: str | None = None, endpoint: str = CLASSIFY_PATH
) -> str:
    """The classify ``endpoint`` for a server base URL (a URL already ending in it is kept),
    asking for ``topk`` classes from ``backbone`` (None: the server's default for the packet)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"server URL must be http(s)://host[:port][/prefix], got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(endpoint):
        path += endpoint
    query = urllib.parse.urlencode({"topk": topk} if backbone is None
                                   else {"topk": topk, "backbone": backbone})
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


class EdgeClient:
    """Encode images into packets from an exported edge bundle.

    Args:
        bundle_dir: an ``edge/`` folder written by ``frankensplit export``.
        threads: onnxruntime intra-op threads (None: onnxruntime's default, one per core).
        verify: check the bundle files' sha256 at load.
        spin: let onnxruntime's intra-op threads spin after a run, waiting for the next
            (its default, the lowest latency for one session). Turn it off when several sessions
            take turns on the same cores, which the spinning threads of the last one slow down,
            or to save energy between images.

    Raises:
        ValueError: not an edge bundle, a corrupt one, or one for another bitstream version.
    """

    def __init__(
        self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True,
        spin: bool = True,
    ) -> None:
        folder = Path(bundle_dir)
        manifest = read_manifest(folder, verify=verify)
        if manifest.format != EDGE_FORMAT:
            raise ValueError(f"{folder} is a {manifest.format}, expected an edge bundle")
        assert isinstance(manifest, EdgeManifest)
        version = bitstream.FORMAT_VERSION if manifest.rates is None else bitstream.RATE_VERSION
        if manifest.bitstream_version != version:
            raise ValueError(
                f"{folder} produces bitstream version {manifest.bitstream_version}; this build "
                f"writes version {version} for a {'variable' if manifest.rates else 'fixed'}-rate "
                "model"
            )
        self.manifest = manifest
        self.model_id = manifest.model_id
        self.coders: dict[int | None, FactorizedCoder] = {}  # rate index (None: fixed) -> coder
        for rate in manifest.rate_indexes:
            names = (*TABLE_NAMES, *(GAIN_NAMES if rate is not None else ()))
            tables = {n: np.load(folder / rate_table_file(n, rate), allow_pickle=False)
                      for n in names}
            coder = self.coders[rate] = FactorizedCoder(**tables)
            if coder.channels != manifest.latent_channels:
                raise ValueError(
                    f"{folder}: tables have {coder.channels} channels, manifest says "
                    f"{manifest.latent_channels}"
                )
        self._session = onnx_session(folder / manifest.encoder_file, threads, spin)
        self._input = self._session.get_inputs()[0].name

    @property
    def rates(self) -> tuple[float, ...] | None:
        """The bundle's lambdas by rate index, lowest bit rate first (None: one fixed rate)."""
        return self.manifest.rates

    @property
    def default_rate(self) -> int | None:
        """The rate index a variable-rate bundle codes at when a call names none (its manifest's,
        the zoo model's default); None: a fixed-rate bundle, or one whose calls name a rate."""
        return self.manifest.default_rate

    @property
    def coder(self) -> FactorizedCoder:
        """A fixed-rate bundle's coder.

        Raises:
            ValueError: a variable-rate bundle (use ``coders[rate]``).
        """
        if self.rates is not None:
            raise ValueError(f"{self.model_id} is variable-rate: use coders[rate], rate one of "
                             f"{describe_rates(self.rates)}")
        return self.coders[None]

    def _rate(self, rate: int | None) -> int | None:
        """The rate index to code at: ``rate``, else the `default_rate`; checked against the
        bundle's rates."""
        rate = self.default_rate if rate is None else rate
        if rate not in self.coders or isinstance(rate, bool):
            if self.rates is None:
                raise ValueError(f"{self.model_id} has one fixed rate; got rate {rate!r}")
            raise ValueError(f"{self.model_id} is variable-rate: give a rate index, one of "
                             f"{describe_rates(self.rates)}; got {rate!r}")
        return rate

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """Image -> x (3, crop, crop) float32, the model's input preprocessing."""
        return preprocess(image, self.manifest.preprocess)

    def encode_latent(self, x: np.ndarray) -> np.ndarray:
        """Run g_a: x (N, 3, H, W) float32 -> y (N, C, H/r, W/r)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got {x.shape}")
        return self._session.run(None, {self._input: x.astype(np.float32, copy=False)})[0]

    def pack(self, y: np.ndarray, rate: int | None = None) -> bytes:
        """Entropy-code one latent y (C, h, w) at ``rate`` (a variable-rate bundle's rate index,
        None: its `default_rate`; None for a fixed-rate one) and frame it as a packet.

        Raises:
            ValueError: a rate the bundle does not have (any rate for a fixed-rate bundle, none
                for a variable-rate one without a default rate).
        """
        rate = self._rate(rate)
        payload = self.coders[rate].encode(y)
        shape = tuple(int(d) for d in y.shape)
        return bitstream.pack(bitstream.Packet(self.model_id, shape, payload, rate))  # type: ignore[arg-type]

    def encode(self, image: ImageInput, rate: int | None = None) -> bytes:
        """One image (path or PIL) -> one complete packet (header, payload, CRC) at ``rate``
        (None: see `pack`)."""
        rate = self._rate(rate)  # a bad rate fails before the encoder runs
        y = self.encode_latent(self.preprocess(image)[None])  # (1, C, h, w)
        return self.pack(y[0], rate)

    def encode_batch(self, images: Sequence[ImageInput], rate: int | None = None) -> list[bytes]:
        """Several images -> packets at ``rate`` (None: see `pack`), running g_a once on the
        stacked batch."""
        rate = self._rate(rate)
        if not images:
            return []
        x = np.stack([self.preprocess(image) for image in images])  # (N, 3, crop, crop)
        return [self.pack(y, rate) for y in self.encode_latent(x)]

    def classify(
        self,
        url: str,
        image: ImageInput,
        topk: int = 5,
        token: str | None = None,
        timeout: float = 30.0,
        cafile: str | Path | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
        request_id: str | None = None,
        on_retry: RetryCallback | None = None,
        backbone: str | None = None,
        rate: int | None = None,
    ) -> dict[str, Any]:
        """Encode ``image`` (at ``rate``, see `encode`) and POST the packet to a ``frankensplit
        serve`` server.

        Args:
            url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
            image: a path or a PIL image.
            topk: how many classes to return.
            token: bearer token, when the server requires one.
            timeout: seconds to wait for one attempt's answer (cut to the retry deadline).
            cafile: CA bundle (PEM) to verify an https server with, e.g. a self-signed one.
            retry: when and how long to retry (`retry.NO_RETRY`: one attempt).
            request_id: ``X-Request-Id`` to send (None: a fresh random one).
            on_retry: called before each retry with (retry number, error, wait in seconds).
            backbone: which of the server's decoders for this encoder answers: a model id or a
                teacher's timm name (encoder reuse: one packet, several backbones; None: the
                encoder's own model). ``GET /v1/models`` lists them per encoder.
            rate: a variable-rate bundle's rate index (`rates`; None: its `default_rate`); None
                for a fixed-rate one.

        Returns:
            The server's JSON answer (``model_id`` of the decoder, ``encoder_id``, ``backbone``,
            ``predictions``, timings), plus
            ``packet_bytes``: the size of what was sent, ``request_id``: the id the server
            echoed, and ``attempts``: how many attempts it took.

        Raises:
            ServerError: the server answered with an error status (its message is kept).
            OSError: the server cannot be reached, or answered for another request id.
        """
        packet = self.encode(image, rate)
        result = post_packet(url, packet, topk=topk, token=token, timeout=timeout, cafile=cafile,
                             retry=retry, request_id=request_id, on_retry=on_retry,
                             backbone=backbone)
        result["packet_bytes"] = len(packet)
        return result


def _post_once(
    request: urllib.request.Request, timeout: float, context: ssl.SSLContext | None
) -> tuple[dict[str, Any], str | None]:
    """One attempt: the decoded JSON answer and the echoed request id."""
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return json.loads(response.read()), response.headers.get(REQUEST_ID_HEADER)
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", errors="replace")
        try:
            detail = json.loads(body).get("detail", body)
        except (json.JSONDecodeError, AttributeError):
            detail = body
        retry_after = parse_retry_after(e.headers.get("Retry-After") if e.headers else None)
        raise ServerError(e.code, str(detail), retry_after) from None


def post_packet(
    url: str,
    packet: bytes,
    topk: int = 5,
    token: str | None = None,
    timeout: float = 30.0,
    cafile: str | Path | None = None,
    retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
    request_id: str | None = None,
    on_retry: RetryCallback | None = None,
    backbone: str | None = None,
    endpoint: str = CLASSIFY_PATH,
) -> dict[str, Any]:
    """POST one packet to ``url``'s classify endpoint and return the decoded JSON answer.

    See `EdgeClient.classify` for the arguments and the keys added to the answer; ``endpoint``
    `protocol.CLASSIFY_IMAGE_PATH` sends an encoded image instead (codec offloading). The same
    ``X-Request-Id`` goes with every attempt; an answer echoing another id is refused (it cannot
    be this request's), an answer without one is accepted (a server that does not echo).

    Raises:
        ServerError: an HTTP error status (the last one, when retries were spent).
        OSError: connection failures and timeouts (after the retries), or a mismatched echo.
    """
    request_id = request_id or uuid.uuid4().hex
    headers = {"Content-Type": "application/octet-stream", "Accept": "application/json",
               REQUEST_ID_HEADER: request_id}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        classify_url(url, topk, backbone, endpoint), data=packet, headers=headers, method="POST"
    )
    context = ssl.create_default_context(cafile=str(cafile)) if cafile is not None else None
    attempts = 0

    def attempt(time_left: float) -> tuple[dict[str, Any], str | None]:
        nonlocal attempts
        attempts += 1
        request.add_header(ATTEMPT_HEADER, str(attempts))  # replaces the previous value
        return _post_once(request, min(timeout, time_left), context)

    try:
        answer, echoed = call_with_retry(attempt, retry, on_retry)
    except ServerError as e:
        raise ServerError(e.status, e.detail, e.retry_after, request_id, attempts) from None
    except (OSError, http.client.HTTPException) as e:
        if not (is_retryable(e) or isinstance(e, http.client.HTTPException)):
            raise
        reason = getattr(e, "reason", None) or str(e) or type(e).__name__
        raise ConnectionError(f"no answer from {url} after {attempts} attempt(s): {reason} "
                              f"(request {request_id})") from e
    if echoed is not None and echoed != request_id:
        raise ConnectionError(f"{url} answered request {echoed!r} to request {request_id!r}")
    answer["request_id"] = echoed
    answer["attempts"] = attempts
    return answer
