"""The inference service behind the HTTP app: validation, batching, sandboxed decoding, g_s + tail.

Packet path: the body is unpacked once (`bitstream.unpack`; the packet's encoder id and the
request's ``backbone`` choose the decoder, `runtime.server.routing`), then the decoder's `ServerPart`
checks it once (`ServerPart.check`: id, exactly the latent shape it accepts, so no packet can make
it run g_s on a huge latent, rate, limits) and it is queued for the model's `Batcher`. A batch
goes through the part alone: `ServerPart.decode_each` entropy-decodes it through the part's coder,
a sandboxed worker process (`runtime.server.sandbox.SandboxCoder`: compressai's decoder is not
memory-safe on forged payloads) or, for trusted senders, this process; then
`ServerPart.classify` runs g_s and the tail on one compute thread (torch uses its own intra-op
threads inside it). The service itself does nothing to packets. An image
(``/v1/classify-image``) must be the model's input crop, checked from its header, joins the
same queue, and is decoded in the batch for the whole teacher. Nothing is kept per client.

A model's part may be the ONNX server half (`runtime.server.onnx_server.OnnxServerPart`, ``serve
--onnx``): its latents and logits are float32 arrays, stacked and turned into probabilities with
numpy (`softmax_top_k`), and this module imports torch only where a torch model runs (`_top_k`),
so that server runs without torch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from frankensplit import bitstream, protocol
from frankensplit.runtime.server.batching import Batcher, QueueFullError
from frankensplit.runtime.server.loading import LoadedModel
from frankensplit.runtime.server.metrics import ServerMetrics
from frankensplit.runtime.server.routing import (
    AmbiguousBackboneError,
    Encoder,
    UnknownBackboneError,
    choose_teacher,
    group_by_encoder,
)
from frankensplit.runtime.server.sandbox import SandboxCoder, SandboxedDecoder

if TYPE_CHECKING:
    from frankensplit.models.split import ServerPart

__all__ = ["HTTPError", "InferenceService", "ServerConfig", "loaded_models", "softmax_top_k"]

log = logging.getLogger("frankensplit.runtime.server")


@dataclass(frozen=True)
class ServerConfig:
    """Server settings.

    Why these batching defaults (``benchmarks/serve_throughput.py``, 2-core CPU shared with other
    jobs, EfficientNet-Lite0 teacher, 8 concurrent clients): with torch's default two threads,
    batching what queued while the model was busy raised throughput from about 12 to 16 images/s;
    with one thread it did not help (17 vs 15 images/s, per-image compute does not shrink with the
    batch on one core); waiting for a batch to fill (10 ms) never helped. So batching is on but
    never waits: it adds no latency when idle and only groups requests that would queue anyway.

    Why the load-shedding defaults: a saturated server should say so at once rather than let
    work pile up. At about 16 images/s (the figure above) 64 queued packets are 4 s of work, so a
    request admitted at the back of a full queue is still answered well inside
    ``request_timeout_s``; beyond that it is cheaper for everyone that the client comes back
    later (503 with ``Retry-After``) than that the queue, the latency and the memory grow without
    bound. Clients of ``runtime.edge.client`` retry 503/504 with backoff, so shedding costs latency,
    not answers. ``docs/reliability.md`` lists every limit with its flag and measured figures.

    Attributes:
        max_batch: most packets decoded together (1 disables batching).
        max_wait_ms: how long a batch waits for more packets after the first (0: batch only what
            queued up while the model was busy, adding no latency).
        max_queue: most requests waiting per model; beyond, 503 with ``Retry-After``.
        max_in_flight: most classify requests (packets and images) handled at once over all
            models (parsed, queued or decoding); beyond, 503 with ``Retry-After`` before any
            work is done. A request takes its slot only once its whole body has arrived, so
            slow uploads cannot fill the slots (they are bounded by ``body_timeout_s`` and the
            connection cap instead).
        request_timeout_s: longest a classify request may take from arrival (body upload, queue
            wait and decoding) before it is answered 504 and dropped from the queue, so a slow
            upload or a long queue never leaves a client hanging.
        body_timeout_s: longest the body may take to arrive, from the end of the request head
            (and never past ``request_timeout_s``); then 408 and the connection is closed. Why
            10 s: a lite0 packet (about 5 KB) needs only 4 kbit/s to make it, and even a 1 MiB
            body (``max_body_bytes``) needs under 1 Mbit/s, while a client that stalls holds its
            connection (and the memory of what it sent) no longer than that.
        retry_after_s: the ``Retry-After`` (whole seconds) sent with every 503.
        max_body_bytes: largest accepted request body, packet or image (413 beyond).
        token: bearer token required on ``/v1/*`` and ``/metrics`` (None: no authentication).
        isolate_decoder: entropy-decode in a sandboxed worker process (see module docstring);
            turn off only for trusted senders.
        decode_timeout_s: longest entropy decoding of one batch before the worker is killed.
        default_topk: classes returned when the request does not say.
    """

    max_batch: int = 8
    max_wait_ms: float = 0.0
    max_queue: int = 64
    max_in_flight: int = 128
    request_timeout_s: float = 30.0
    body_timeout_s: float = 10.0
    retry_after_s: int = 1
    max_body_bytes: int = 1 << 20
    token: str | None = None
    isolate_decoder: bool = True
    decode_timeout_s: float = 5.0
    default_topk: int = 5

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_in_flight", "retry_after_s",
                     "max_body_bytes", "default_topk"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ServerConfig.{name} must be a positive int, got {value!r}")
        if self.max_wait_ms < 0 or self.decode_timeout_s <= 0 or self.request_timeout_s <= 0:
            raise ValueError(
                f"ServerConfig needs max_wait_ms >= 0, decode_timeout_s > 0 and "
                f"request_timeout_s > 0, got {self.max_wait_ms!r}, {self.decode_timeout_s!r} "
                f"and {self.request_timeout_s!r}"
            )
        if not self.body_timeout_s > 0:
            raise ValueError(f"ServerConfig.body_timeout_s must be > 0, got {self.body_timeout_s!r}")
        if self.token is not None and not self.token:
            raise ValueError("ServerConfig.token must be None or a non-empty string")


#: The `ServerConfig` fields published on ``/metrics`` as ``frankensplit_limit{name=...}``.
_PUBLISHED_LIMITS = ("max_batch", "max_queue", "max_in_flight", "request_timeout_s",
                     "body_timeout_s", "max_body_bytes", "decode_timeout_s")


class HTTPError(Exception):
    """An error answer: status code and a one-line message (returned as ``{"detail": ...}``).

    ``model_id`` is the loaded model the request was for, once known (a metrics label).
    """

    def __init__(self, status: int, detail: str, model_id: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.model_id = model_id


@dataclass(frozen=True)
class _Job:
    item: bitstream.Packet | Image.Image  # a parsed packet, or an image whose header was read
    body: bytes
    topk: int
    queued_at: float


def softmax_top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, classes) -> the ``k`` largest probabilities (N, k) float32 and their class
    indexes (N, k), most probable first: torch's ``softmax(1).topk(k)`` in numpy, equal within
    float32 rounding (ties are ordered by class index)."""
    z = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)  # exp cannot overflow
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    indexes = np.argsort(-probs, axis=1, kind="stable")[:, :min(k, probs.shape[1])]
    return np.take_along_axis(probs, indexes, axis=1), indexes


def _top_k(forward: Callable[[Any], Any], inputs: list[Any], k: int
           ) -> tuple[list[list[float]], list[list[int]], int]:
    """Stack ``inputs``, run ``forward``, keep the top ``k``: (probabilities, indexes, classes).

    Float32 arrays (the ONNX part's latents) stay in numpy; tensors (a torch part's latents, an
    image batch for the whole teacher) run in torch, imported only then.
    """
    if isinstance(inputs[0], np.ndarray):
        logits = forward(np.stack(inputs))  # (n, classes)
        probs, indexes = softmax_top_k(logits, k)
        return probs.tolist(), indexes.tolist(), int(logits.shape[1])
    import torch

    with torch.no_grad():
        logits = forward(torch.stack(inputs))  # (n, classes)
        classes = int(logits.shape[1])
        probs, indexes = logits.float().softmax(dim=1).topk(min(k, classes), dim=1)
    return probs.tolist(), indexes.tolist(), classes


def loaded_models(models: Mapping[str, ServerPart | LoadedModel]) -> list[LoadedModel]:
    """Normalise ``{model_id: ServerPart | LoadedModel}`` (a bare part accepts any latent size).

    Raises:
        TypeError: a value of another type.
        ValueError: a key that is not the part's own model id.
    """
    loaded = []
    for model_id, model in models.items():
        if not isinstance(model, LoadedModel):
            from frankensplit.models.split import ServerPart  # torch: only for a bare torch part

            if not isinstance(model, ServerPart):
                raise TypeError(f"models[{model_id!r}] must be a ServerPart or LoadedModel")
            model = LoadedModel(model_id, model)
        if model.part.model_id != model_id:
            raise ValueError(f"models[{model_id!r}] is a server part for {model.part.model_id!r}")
        loaded.append(model)
    return loaded


class InferenceService:
    """Everything one app holds: models, their batchers, the decoder sandbox, metrics."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        for name in _PUBLISHED_LIMITS:
            self.metrics.limits.labels(name).set(getattr(config, name))
        self.models: dict[str, LoadedModel] = {}
        self.encoders: dict[str, Encoder] = {}  # encoder id (what packets name) -> its decoders
        self.batchers: dict[str, Batcher] = {}
        self.sandbox: SandboxedDecoder | None = None
        self.compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frankensplit-model")
        self.ready = False
        self.error: str | None = None
        self.in_flight = 0  # classify requests admitted and not yet answered (event loop only)
        self._restarts_seen = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, loader: Callable[[], Sequence[LoadedModel]]) -> None:
        """Load models off the event loop, then open for traffic (``/readyz`` turns 200)."""
        loop = asyncio.get_running_loop()
        try:
            models = await loop.run_in_executor(self.compute, lambda: list(loader()))
            encoders = group_by_encoder(models)  # one set of tables per encoder, checked
            if self.config.isolate_decoder:
                tables = {e: d.decoders[0].part.coding_tables() for e, d in encoders.items()}
                self.sandbox = SandboxedDecoder(tables, timeout_s=self.config.decode_timeout_s)
                await loop.run_in_executor(self.compute, self.sandbox.start)
                models = [dataclasses.replace(m, part=m.part.with_coder(
                    SandboxCoder(self.sandbox, m.encoder_id))) for m in models]
                encoders = group_by_encoder(models)
        except Exception as e:  # noqa: BLE001 - reported on /readyz and in the log
            self.error = f"{type(e).__name__}: {e}"
            log.error("loading models failed: %s", self.error)
            return
        for model in models:
            self.models[model.model_id] = model
            batcher = Batcher(
                lambda jobs, m=model: self._run_batch(m, jobs), max_batch=self.config.max_batch,
                max_wait_s=self.config.max_wait_ms / 1000.0, max_queue=self.config.max_queue,
            )
            batcher.start()
            self.batchers[model.model_id] = batcher
        self.encoders = encoders
        self.metrics.models_loaded.set(len(self.models))
        self.ready = True

    async def stop(self) -> None:
        """Stop batchers, the decoder worker and the compute thread."""
        for batcher in self.batchers.values():
            await batcher.close()
        if self.sandbox is not None:
            self.sandbox.close()
        self.compute.shutdown(wait=False, cancel_futures=True)

    # -- inference (compute thread) ---------------------------------------------------------

    @staticmethod
    def _latents(model: LoadedModel, jobs: list[_Job]) -> list[Any]:
        """y_hat (C, h, w) per packet, or the exception that packet raised (`ServerPart`)."""
        return model.part.decode_each([job.item for job in jobs])  # type: ignore[misc]

    @staticmethod
    def _crops(model: LoadedModel, jobs: list[_Job]) -> list[Any]:
        """x (3, crop, crop) per image, normalised for the teacher, or a 400 for bad bytes."""
        from frankensplit.data import normalize_transform  # torch: images need the torch teacher

        normalize = normalize_transform(model.data_config)  # type: ignore[arg-type]
        crops: list[Any] = []
        for job in jobs:
            try:
                with job.item:
                    crops.append(normalize(job.item.convert("RGB")))  # decodes the image
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                crops.append(HTTPError(400, f"cannot decode the {job.item.format} image: {e}",
                                       model.model_id))
        return crops

    def _infer(self, model: LoadedModel, jobs: list[_Job], topk: int) -> list[Any]:
        """Jobs of one kind (packets of one latent shape, or images) -> (predictions, timing)."""
        start = time.perf_counter()
        if isinstance(jobs[0].item, bitstream.Packet):
            inputs, stage = self._latents(model, jobs), "entropy_decode_ms"
            forward = model.part.classify
        else:
            inputs, stage = self._crops(model, jobs), "image_decode_ms"
            forward = model.teacher_model  # the whole teacher: head + tail
        stage_ms = (time.perf_counter() - start) * 1000
        good = [i for i, x in enumerate(inputs) if not isinstance(x, Exception)]
        results: list[Any] = list(inputs)
        if good:
            probs, indexes, classes = _top_k(forward, [inputs[i] for i in good], topk)
            for row, i in enumerate(good):
                results[i] = protocol.predictions(probs[row], indexes[row], classes,
                                                  model.class_names)
        timing = {"decode_ms": (time.perf_counter() - start) * 1000, stage: stage_ms}
        return [r if isinstance(r, Exception) else (r, timing) for r in results]

    async def _run_batch(self, model: LoadedModel, jobs: list[_Job]) -> list[Any]:
        started = time.perf_counter()
        self.metrics.batch_size.labels(model.model_id).observe(len(jobs))
        groups: dict[Any, list[int]] = {}  # one forward per latent shape, one for the images
        for i, job in enumerate(jobs):
            key = job.item.shape if isinstance(job.item, bitstream.Packet) else "image"
            groups.setdefault(key, []).append(i)
        results: list[Any] = [None] * len(jobs)
        loop = asyncio.get_running_loop()
        for indexes in groups.values():
            group = [jobs[i] for i in indexes]
            topk = max(job.topk for job in group)
            outs = await loop.run_in_executor(self.compute, self._infer, model, group, topk)
            for i, out in zip(indexes, outs):
                results[i] = out if isinstance(out, Exception) else (*out, len(jobs), started)
        if self.sandbox is not None and self.sandbox.restarts > self._restarts_seen:
            self.metrics.decoder_restarts.inc(self.sandbox.restarts - self._restarts_seen)
            self._restarts_seen = self.sandbox.restarts
        return results

    # -- request handling -------------------------------------------------------------------

    def parse(
        self, body: bytes, backbone: str | None = None
    ) -> tuple[LoadedModel, bitstream.Packet]:
        """Validate a packet fully before it costs any decoding work; ``backbone`` picks the
        decoder of the packet's encoder (`runtime.server.routing.Encoder.choose`).

        Raises:
            HTTPError: 400 bad packet, a latent shape the decoder does not take or a backbone
                that fits several decoders, 404 an encoder no loaded decoder takes or a backbone
                not served for it (the message lists what is).
        """
        try:
            packet = bitstream.unpack(body)
        except bitstream.BitstreamError as e:
            raise HTTPError(400, str(e)) from None
        encoder = self.encoders.get(packet.model_id)
        if encoder is None:
            raise HTTPError(
                404, f"unknown model {packet.model_id!r}; served encoders: {sorted(self.encoders)}"
            )
        try:
            model = encoder.choose(backbone)
        except (UnknownBackboneError, AmbiguousBackboneError) as e:
            raise HTTPError(404 if isinstance(e, LookupError) else 400, str(e)) from None
        try:
            return model, model.part.check(packet)  # id, latent shape, rate, limits: once
        except bitstream.BitstreamError as e:
            raise HTTPError(400, str(e), model.model_id) from None

    def parse_image(
        self, body: bytes, backbone: str | None = None
    ) -> tuple[LoadedModel, Image.Image]:
        """Choose the teacher (`runtime.server.routing.choose_teacher`), read the image's header.

        Raises:
            HTTPError: 400 another format, not the model's input size or a backbone of several
                teachers, 413 larger than that size, 404 no such backbone (listing what is).
        """
        try:
            model = choose_teacher(list(self.models.values()), backbone)
        except (UnknownBackboneError, AmbiguousBackboneError) as e:
            raise HTTPError(404 if isinstance(e, LookupError) else 400, str(e)) from None
        crop = int(model.data_config["input_size"][-1])  # type: ignore[index]
        Image.init()  # every plugin registered (a no-op after the first call)
        formats = [f for f in protocol.IMAGE_FORMATS if f in Image.OPEN]
        try:
            image = Image.open(io.BytesIO(body), formats=formats)  # reads the header only
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise HTTPError(400, f"not a {'/'.join(formats)} image: {e}", model.model_id) from None
        if image.size != (crop, crop):
            raise HTTPError(
                413 if max(image.size) > crop else 400,
                f"image of {image.width}x{image.height} pixels; {model.teacher} takes its "
                f"{crop}x{crop} input crop (resize and center-crop on the device)", model.model_id)
        return model, image

    async def classify(
        self, model: LoadedModel, item: bitstream.Packet | Image.Image, body: bytes, topk: int,
        attempt: int = 1,
    ) -> dict[str, Any]:
        """One packet (validated by `parse`) or image (by `parse_image`) -> the JSON answer.

        ``attempt`` (the client's ``X-Attempt``) ranks the request in a full queue: see
        `runtime.server.batching` for why retried requests go first.
        """
        job = _Job(item, body, topk, time.perf_counter())
        try:
            result = await self.batchers[model.model_id].submit(job, priority=attempt)
        except QueueFullError as e:
            raise HTTPError(503, f"server busy: {e}", model.model_id) from None
        except HTTPError:
            raise
        except bitstream.BitstreamError as e:
            raise HTTPError(400, str(e), model.model_id) from None
        except Exception:  # a bug or resource failure, not the client's fault: 500
            log.exception("decoding a request for %s failed", model.model_id)
            raise HTTPError(500, "internal error while decoding", model.model_id) from None
        predictions, timing, batch_size, started = result
        timing = {**timing, "queue_ms": (started - job.queued_at) * 1000}
        if isinstance(item, bitstream.Packet):
            return protocol.answer(model.model_id, model.teacher, predictions[:topk],
                                   len(item.payload), batch_size, timing,
                                   encoder_id=item.model_id, latent_shape=list(item.shape))
        return protocol.answer(model.model_id, model.teacher, predictions[:topk], len(body),
                               batch_size, timing, format=item.format)

