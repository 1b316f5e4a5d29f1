"""HTTP inference server: packets in, top-k classes out.

Why FastAPI on uvicorn: both are widely used and maintained; the handlers are async, so many slow
uploads wait cheaply while one compute thread runs the model; FastAPI documents the API as OpenAPI
(``/docs``) for free; and uvicorn terminates TLS itself (``--ssl-keyfile``/``--ssl-certfile`` on
``frankensplit serve``), so a deployment needs no extra proxy.

Endpoints:

- ``POST /v1/classify?topk=5``: body = one packet, raw ``application/octet-stream``; the packet's
  model id selects the model. Answers ``{"model_id", "predictions": [{"index", "name",
  "probability"}], "decode_ms", ...}``; 400 bad packet or topk, 401 missing/wrong token,
  404 unknown model, 413 body over the limit, 503 not ready or queue full.
- ``GET /v1/models``: the models served and the latent shapes they accept.
- ``GET /healthz``: the process answers. ``GET /readyz``: 200 once every model is loaded.
- ``GET /metrics``: Prometheus (requests by status, latency histogram, bytes received, batch sizes).

The bearer token (when configured) guards ``/v1/*`` and ``/metrics``; the probes stay open for
orchestrators. See `frankensplit.runtime.service` for what happens to a packet.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from frankensplit import __version__
from frankensplit.models.split import ServerPart
from frankensplit.runtime.loading import LoadedModel
from frankensplit.runtime.metrics import CONTENT_TYPE_LATEST
from frankensplit.runtime.service import HTTPError, InferenceService, ServerConfig, loaded_models

__all__ = ["ServerConfig", "create_app"]


async def _read_body(request: Request, limit: int) -> bytes:
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


def _check_token(request: Request, token: str | None) -> None:
    if token is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
        raise HTTPError(401, "missing or invalid bearer token")


def _topk(request: Request, default: int) -> int:
    raw = request.query_params.get("topk")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise HTTPError(400, f"topk must be an integer in 1..1000, got {raw!r}")
    return int(raw)


def _error(e: HTTPError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return JSONResponse({"detail": e.detail}, status_code=e.status, headers=headers)


def create_app(
    models: Mapping[str, ServerPart | LoadedModel] | None = None,
    config: ServerConfig = ServerConfig(),
    loader: Callable[[], Sequence[LoadedModel]] | None = None,
) -> FastAPI:
    """Build the server app.

    Args:
        models: model id -> `ServerPart` (accepts any latent size its checks allow) or
            `LoadedModel` (accepts exactly its latent shape: prefer this for untrusted clients).
        config: batching, limits, authentication.
        loader: alternative to ``models``: called in a thread at startup, so ``/healthz`` answers
            while weights load and ``/readyz`` turns ready when it returns.

    Raises:
        ValueError: both or neither of ``models`` and ``loader``, or a bad ``models`` mapping.
    """
    if (models is None) == (loader is None):
        raise ValueError("pass exactly one of models= and loader=")
    if models is not None:
        fixed = loaded_models(models)
        loader = lambda: fixed  # noqa: E731
    service = InferenceService(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start(loader)
        yield
        await service.stop()

    app = FastAPI(title="FrankenSplit server", version=__version__, lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, e: HTTPError) -> JSONResponse:
        return _error(e)

    @app.post("/v1/classify")
    async def classify(request: Request) -> JSONResponse:
        start = time.perf_counter()
        label = "-"  # a loaded model's id once the packet names one, never raw client input
        try:
            _check_token(request, config.token)
            if not service.ready:
                raise HTTPError(503, service.error or "models are still loading")
            body = await _read_body(request, config.max_body_bytes)
            service.metrics.bytes_received.inc(len(body))
            topk = _topk(request, config.default_topk)
            model, packet = service.parse(body)
            label = model.model_id
            answer = await service.classify(model, packet, topk)
        except HTTPError as e:
            service.metrics.requests.labels(label, str(e.status)).inc()
            return _error(e)
        service.metrics.requests.labels(label, "200").inc()
        service.metrics.latency.labels(label).observe(time.perf_counter() - start)
        return JSONResponse(answer)

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict:
        _check_token(request, config.token)
        return {"models": [
            {"model_id": m.model_id, "latent_shape": list(m.latent_shape or ()) or None}
            for m in service.models.values()
        ]}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if service.ready:
            return JSONResponse({"status": "ready", "models": sorted(service.models)})
        status = "failed" if service.error else "loading"
        return JSONResponse({"status": status, "detail": service.error}, status_code=503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        _check_token(request, config.token)
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
