"""HTTP inference server: packets (or, for codec offloading, images) in, top-k classes out.

Why FastAPI on uvicorn: both are widely used and maintained; the handlers are async, so many slow
uploads wait cheaply while one compute thread runs the model; FastAPI documents the API as OpenAPI
(``/docs``) for free; and uvicorn terminates TLS itself (``--ssl-keyfile``/``--ssl-certfile`` on
``frankensplit serve``), so a deployment needs no extra proxy.

Endpoints:

- ``POST /v1/classify?topk=5&backbone=B``: body = one packet, raw ``application/octet-stream``;
  the packet's model id names the encoder that wrote it, ``backbone`` (a decoder's model id or
  its teacher's timm name) which of its decoders answers, by default its own model
  (`runtime.server.routing`). Answer, headers and error body: `frankensplit.protocol`. 400 bad packet,
  topk, backbone or ``X-Request-Id``, 401 missing/wrong token, 404 unknown model (no decoder for
  the packet's encoder, or no such backbone for it; the message lists what is served), 408 body
  not received within ``body_timeout_s`` (the connection is closed), 413 body over the limit,
  503 (with ``Retry-After``) not ready, queue full or too many requests in flight, 504 not
  answered within ``request_timeout_s``.
- ``POST /v1/classify-image?topk=5&backbone=B`` (codec offloading): the model's input crop as
  a JPEG/WebP/AVIF/PNG file, answered by the whole teacher (default: the only one served) under
  the same limits and queues; 400 another format or size or undecodable, 413 larger than the crop;
  404 on a server of ONNX server halves (``serve --onnx``), which hold no teacher head.
- ``GET /v1/models``: the models served (id, encoder id, teacher, accepted latent shape, and a
  variable-rate model's rates: index, lambda and recorded dev figures, and ``default_rate``, the
  index its edge codes at when none is named, where the server knows it (a zoo id's); every rate
  is served under the one model id, a packet carrying its rate index), and per encoder id its
  default and the backbones that decode its packets. A packet whose rate the model does not have is a 400.
- ``GET /healthz``: the process answers. ``GET /readyz``: 200 once every model is loaded.
- ``GET /metrics``: Prometheus (requests by status, latency histogram, bytes received, batch sizes).

The bearer token (when configured) guards ``/v1/*`` and ``/metrics``; the probes stay open for
orchestrators. See `frankensplit.runtime.server.service` for what happens to a packet, and
``docs/reliability.md`` for the limits (``ServerConfig``) and how clients retry.

Load shedding, in the order a request meets it: the connection cap (``--max-connections``, 503)
and the request-head deadline (``--header-timeout``, closed), both in `runtime.server.connections`; the
body deadline (``body_timeout_s``, 408 and closed); ``max_in_flight`` (503, counted only once the
body is in, so slow uploads cannot take the slots of complete requests); the model's bounded
queue (``max_queue``, 503); then ``request_timeout_s`` over upload + queue + decoding (504).
Every 503 carries ``Retry-After``; nothing waits without bound.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from frankensplit import __version__, protocol
from frankensplit.protocol import REQUEST_ID_HEADER
from frankensplit.runtime.server.connections import ConnectionLimits, server_config
from frankensplit.runtime.server.loading import LoadedModel
from frankensplit.runtime.server.metrics import CONTENT_TYPE_LATEST
from frankensplit.runtime.server.service import (
    HTTPError,
    InferenceService,
    ServerConfig,
    loaded_models,
)

if TYPE_CHECKING:
    from frankensplit.models.split import ServerPart

__all__ = ["ConnectionLimits", "ServerConfig", "create_app", "run_in_thread"]

T = TypeVar("T")


async def _stream_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPError(400, f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise HTTPError(413, f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_body(request: Request, config: ServerConfig, deadline: float) -> bytes:
    """The whole body by ``deadline`` (monotonic), before the request takes an in-flight slot.

    Why first: a slot held while a client uploads is a slot a stalled client can keep (measured
    before this order: 150 stalled uploads made every other request 503 for 30 s). Read first,
    a stalled upload holds only its connection and the bytes it sent, until 408.

    Raises:
        HTTPError: 408 when the body is not in by the deadline (the answer closes the
            connection: the rest of the body may still be on its way), 413 over the limit,
            400 bad ``Content-Length``, 499 (never sent) when the client hung up.
    """
    try:
        return await asyncio.wait_for(_stream_body(request, config.max_body_bytes),
                                      max(deadline - time.monotonic(), 0.0))
    except asyncio.TimeoutError:
        limit = min(config.body_timeout_s, config.request_timeout_s)
        raise HTTPError(408, f"request body not received within {limit:g} s (body_timeout_s="
                             f"{config.body_timeout_s:g}); send it at once after the headers"
                        ) from None
    except ClientDisconnect:
        raise HTTPError(499, "client closed the connection before its body arrived") from None


async def _within(
    work: Awaitable[T], deadline: float, config: ServerConfig, model_id: str | None = None
) -> T:
    """``work``'s result, or 504 once the request's ``request_timeout_s`` is spent."""
    try:
        return await asyncio.wait_for(work, max(deadline - time.monotonic(), 0.0))
    except asyncio.TimeoutError:
        raise HTTPError(
            504, f"not answered within request_timeout_s={config.request_timeout_s:g} s "
            "(upload, queue wait and decoding); retry later", model_id,
        ) from None


def _check_token(request: Request, token: str | None) -> None:
    if token is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
        raise HTTPError(401, "missing or invalid bearer token")


def _unauthorized(request: Request, service: InferenceService) -> JSONResponse | None:
    """The 401 answer for a request without the server's token, None when it may proceed."""
    try:
        _check_token(request, service.config.token)
    except HTTPError as e:
        return _error(e)
    return None


def _error(
    e: HTTPError, config: ServerConfig | None = None, request_id: str | None = None
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else {}
    if e.status == 503 and config is not None:
        headers["Retry-After"] = str(config.retry_after_s)
    if e.status == 408:
        headers["Connection"] = "close"  # the rest of the body may still come: not reusable
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse({"detail": e.detail}, status_code=e.status, headers=headers)


async def classify(request: Request) -> JSONResponse:
    """``POST /v1/classify``: one packet in the body -> top-k JSON."""
    return await _classify(request, image=False)


async def classify_image(request: Request) -> JSONResponse:
    """``POST /v1/classify-image``: one encoded image in the body -> the teacher's top-k JSON."""
    return await _classify(request, image=True)


async def _classify(request: Request, image: bool) -> JSONResponse:
    service: InferenceService = request.app.state.service
    config = service.config
    start, arrived = time.perf_counter(), time.monotonic()
    deadline = arrived + config.request_timeout_s
    raw_id = request.headers.get(REQUEST_ID_HEADER)
    # echoed only when well-formed; a malformed one is refused once the caller is authenticated
    request_id = raw_id if raw_id is None or protocol.is_request_id(raw_id) else None
    admitted = False
    try:
        _check_token(request, config.token)
        if raw_id is not None and request_id is None:
            raise HTTPError(400, f"{REQUEST_ID_HEADER} must be 1 to 128 visible ASCII characters")
        if not service.ready:
            raise HTTPError(503, service.error or "models are still loading")
        body_deadline = min(arrived + config.body_timeout_s, deadline)
        body = await _read_body(request, config, body_deadline)
        if service.in_flight >= config.max_in_flight:
            raise HTTPError(503, f"server busy: {service.in_flight} requests in flight "
                                 f"(max_in_flight {config.max_in_flight})")
        service.in_flight += 1
        admitted = True
        service.metrics.bytes_received.inc(len(body))
        query = request.query_params
        try:
            backbone = protocol.parse_backbone(query.get("backbone"))
        except ValueError as e:
            raise HTTPError(400, str(e)) from None
        model, item = (service.parse_image if image else service.parse)(body, backbone)
        try:
            topk = protocol.parse_topk(query.get("topk"), config.default_topk)
            attempt = protocol.parse_attempt(request.headers.get(protocol.ATTEMPT_HEADER))
        except ValueError as e:
            raise HTTPError(400, str(e), model.model_id) from None
        work = service.classify(model, item, body, topk, attempt)
        answer = await _within(work, deadline, config, model.model_id)
    except HTTPError as e:
        # label: a loaded model's id once the packet names one, never raw client input
        service.metrics.requests.labels(e.model_id or "-", str(e.status)).inc()
        return _error(e, config, request_id)
    finally:
        if admitted:
            service.in_flight -= 1
    service.metrics.requests.labels(model.model_id, "200").inc()
    service.metrics.latency.labels(model.model_id).observe(time.perf_counter() - start)
    headers = {REQUEST_ID_HEADER: request_id} if request_id is not None else None
    return JSONResponse(answer, headers=headers)


async def list_models(request: Request) -> JSONResponse:
    """``GET /v1/models``: the models, and per encoder id the backbones decoding its packets."""
    service: InferenceService = request.app.state.service
    if (denied := _unauthorized(request, service)) is not None:
        return denied
    return JSONResponse({
        "models": [
            {"model_id": m.model_id, "encoder_id": m.encoder_id, "teacher": m.teacher,
             "latent_shape": list(m.latent_shape) if m.latent_shape else None,
             "rates": m.describe_rates(), "default_rate": m.default_rate}
            for m in service.models.values()
        ],
        "encoders": {e: encoder.describe() for e, encoder in service.encoders.items()},
    })


async def healthz() -> JSONResponse:
    """``GET /healthz``: the process is up (liveness)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """``GET /readyz``: 200 once the models are loaded, 503 while loading or after a failure."""
    service: InferenceService = request.app.state.service
    if service.ready:
        return JSONResponse({"status": "ready", "models": sorted(service.models)})
    status = "failed" if service.error else "loading"
    return JSONResponse({"status": status, "detail": service.error}, status_code=503)


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text format."""
    service: InferenceService = request.app.state.service
    if (denied := _unauthorized(request, service)) is not None:
        return denied
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def create_app(
    models: Mapping[str, ServerPart | LoadedModel] | None = None,
    config: ServerConfig | None = None,
    loader: Callable[[], Sequence[LoadedModel]] | None = None,
) -> FastAPI:
    """Build the server app.

    Args:
        models: model id -> `ServerPart` (accepts any latent size its checks allow) or
            `LoadedModel` (accepts exactly its latent shape: prefer this for untrusted clients).
        config: batching, limits, authentication (None: `ServerConfig` defaults).
        loader: alternative to ``models``: called in a thread at startup, so ``/healthz`` answers
            while weights load and ``/readyz`` turns ready when it returns.

    Raises:
        ValueError: both or neither of ``models`` and ``loader``, or a bad ``models`` mapping.
    """
    config = config or ServerConfig()
    if (models is None) == (loader is None):
        raise ValueError("pass exactly one of models= and loader=")
    if models is not None:
        fixed = loaded_models(models)
        loader = lambda: fixed
    service = InferenceService(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(service.start(loader))  # serve probes while loading
        yield
        loading.cancel()
        await asyncio.gather(loading, return_exceptions=True)
        await service.stop()

    app = FastAPI(title="FrankenSplit server", version=__version__, lifespan=lifespan)
    app.state.service = service
    app.add_api_route(protocol.CLASSIFY_PATH, classify, methods=["POST"])
    app.add_api_route(protocol.CLASSIFY_IMAGE_PATH, classify_image, methods=["POST"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/readyz", readyz, methods=["GET"])
    app.add_api_route("/metrics", metrics, methods=["GET"])
    return app


@contextmanager
def run_in_thread(
    app: FastAPI,
    host: str = "127.0.0.1",
    timeout: float = 60.0,
    limits: ConnectionLimits | None = None,
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread on a free port; yield its base URL.

    For tests, benchmarks and embedding a server in another program. The port is bound here
    (port 0), so parallel runs never collide; the server is stopped on exit. It runs the same
    protocol and connection limits as ``frankensplit serve`` (`runtime.server.connections`; None: the
    defaults).

    Raises:
        RuntimeError: uvicorn did not start within ``timeout`` seconds.
    """
    import uvicorn

    sock = socket.socket()
    sock.bind((host, 0))
    server = uvicorn.Server(server_config(app, limits, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on {host} within {timeout} s")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
