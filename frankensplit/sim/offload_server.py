"""The offloading baseline server: a standard codec's bytes in, the unmodified teacher's top-k out.

``frankensplit serve`` accepts FrankenSplit packets only. To measure codec offloading through the
same link (``benchmarks/shaped_link.py``), this is its counterpart for images, kept as small and as
similar as possible: FastAPI on uvicorn, one compute thread, the same JSON answer layout::

    POST /v1/classify-image?codec=jpeg&topk=5   body: the codec's whole output
        --codec decode (frankensplit.codecs)--> x_hat crop --normalise--> teacher --> top-k JSON
    GET /readyz                                 200 once the teacher is loaded

It has no batching, authentication or decoder sandbox: it is a measuring instrument, not a
deployment. Run it with ``python -m frankensplit.sim.offload_server --model M --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from frankensplit.backbones import SplitBackbone
from frankensplit.codecs import create_codec
from frankensplit.data import normalize_transform
from frankensplit.runtime.client import REQUEST_ID_HEADER

__all__ = ["CLASSIFY_IMAGE_PATH", "create_offload_app", "main"]

CLASSIFY_IMAGE_PATH = "/v1/classify-image"


def _names(num_classes: int) -> list[str] | None:
    if num_classes != 1000:
        return None
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(num_classes)]


def create_offload_app(teacher: SplitBackbone, max_body_bytes: int = 1 << 22) -> FastAPI:
    """The app around ``teacher`` (eval mode), decoding with any registered codec.

    Raises:
        ValueError: a non-positive ``max_body_bytes``.
    """
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
    norm = normalize_transform(teacher.data_config)
    compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frankensplit-offload")
    names: dict[str, list[str] | None] = {}

    @torch.no_grad()
    def infer(codec: str, data: bytes, topk: int) -> dict[str, Any]:
        start = time.perf_counter()
        x_hat = create_codec(codec).decode(data)  # PIL RGB crop
        decoded = time.perf_counter()
        logits = teacher(norm(x_hat).unsqueeze(0))  # (1, num_classes)
        if "names" not in names:
            names["names"] = _names(int(logits.shape[1]))
        probs, indexes = logits.float().softmax(dim=1).topk(topk, dim=1)
        labels = names["names"]
        return {
            "codec": codec,
            "predictions": [{"index": int(i), "name": labels[int(i)] if labels else None,
                             "probability": float(p)} for p, i in zip(probs[0], indexes[0])],
            "payload_bytes": len(data),
            "decode_ms": round((decoded - start) * 1000, 3),
            "infer_ms": round((time.perf_counter() - decoded) * 1000, 3),
        }

    async def classify_image(request: Request) -> JSONResponse:
        codec = request.query_params.get("codec", "jpeg")
        topk = request.query_params.get("topk", "5")
        if not topk.isdigit() or not 1 <= int(topk) <= 1000:
            return JSONResponse({"detail": f"bad topk {topk!r}"}, status_code=400)
        body = await request.body()
        if not body or len(body) > max_body_bytes:
            return JSONResponse({"detail": f"body of {len(body)} bytes"}, status_code=413)
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(compute, infer, codec, body, int(topk))
        except (ValueError, OSError) as e:  # unknown codec or undecodable bytes
            return JSONResponse({"detail": str(e)}, status_code=400)
        request_id = request.headers.get(REQUEST_ID_HEADER)  # echoed, as frankensplit serve does
        headers = {REQUEST_ID_HEADER: request_id[:64]} if request_id else None
        return JSONResponse(answer, headers=headers)

    async def readyz() -> JSONResponse:
        return JSONResponse({"status": "ready", "teacher": teacher.name})

    app = FastAPI(title="FrankenSplit offloading baseline")
    app.add_api_route(CLASSIFY_IMAGE_PATH, classify_image, methods=["POST"])
    app.add_api_route("/readyz", readyz, methods=["GET"])
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the teacher of a zoo model on loopback until interrupted."""
    import uvicorn

    from frankensplit.models.zoo import create_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="zoo model id whose teacher to serve")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    teacher = create_model(args.model).teacher.eval()
    uvicorn.run(create_offload_app(teacher), host="127.0.0.1", port=args.port,
                log_level="warning")


if __name__ == "__main__":  # pragma: no cover
    main()
