"""``frankensplit serve``: the HTTP inference server (FastAPI on uvicorn).

Weights load in the background (``/healthz`` answers, ``/readyz`` turns 200 when done), but the
files are checked first, in the foreground: a missing, truncated or corrupted weights file (sha256
from the bundle manifest or ``zoo/index.json``, then the safetensors header) ends the command with
one line and exit code 2 instead of a server that never becomes ready. The load-shedding flags
map one to one onto `ServerConfig` and, for connections, `ConnectionLimits` (see
``docs/reliability.md``); uvicorn runs with the guarded protocol of `runtime.server.connections`.

With ``--onnx`` every ``--model`` is an ONNX server half (``frankensplit export --server-onnx``),
run by ONNX Runtime: the same app, checks, batching, sandbox and answers, and no torch in the
process (`runtime.server.onnx_server`); ``--threads`` are then ONNX Runtime's intra-op threads.
Such a server classifies packets only: the ONNX half holds g_s and the teacher's tail, not its
head, so ``/v1/classify-image`` answers 404 saying so.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from frankensplit.cli import (
    existing_file,
    non_negative_float,
    port,
    positive_float,
    positive_int,
    teacher_weights,
)

__all__ = ["HELP", "check_weights", "configure", "run"]

HELP = "serve one or more models over HTTP: POST a packet to /v1/classify, get top-k classes"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    parser.add_argument("--model", action="append", required=True, metavar="ID_OR_BUNDLE",
                        help="zoo model id, server bundle folder or codec file written by "
                             "`frankensplit train` (with --onnx: a server-onnx/ folder); repeat "
                             "to serve several")
    parser.add_argument("--onnx", action="store_true",
                        help="serve ONNX server halves (export --server-onnx) with ONNX Runtime, "
                             "without torch; packets only (no /v1/classify-image)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=port, default=8000)
    parser.add_argument("--token", default=None,
                        help="require this bearer token (default: $FRANKENSPLIT_TOKEN; prefer the "
                             "environment, a command line is visible to other users)")
    parser.add_argument("--max-batch", type=positive_int, default=8,
                        help="largest dynamic batch (1: off)")
    parser.add_argument("--max-wait-ms", type=non_negative_float, default=0.0,
                        help="wait this long for more requests after the first (0: batch only "
                             "what queued while busy)")
    parser.add_argument("--max-body-bytes", type=positive_int, default=1 << 20)
    parser.add_argument("--max-queue", type=positive_int, default=64,
                        help="requests waiting per model; beyond, 503 + Retry-After")
    parser.add_argument("--max-in-flight", type=positive_int, default=128,
                        help="classify requests handled at once; beyond, 503 + Retry-After")
    parser.add_argument("--request-timeout", type=positive_float, default=30.0, metavar="S",
                        help="answer 504 when upload + queue + decoding exceed S seconds")
    parser.add_argument("--body-timeout", type=positive_float, default=10.0, metavar="S",
                        help="answer 408 and close when a request body is not in S seconds "
                             "after its headers")
    parser.add_argument("--header-timeout", type=positive_float, default=10.0, metavar="S",
                        help="close a connection that sends no complete request head within S "
                             "seconds of connecting or of the previous answer")
    parser.add_argument("--retry-after", type=positive_int, default=1, metavar="S",
                        help="Retry-After seconds sent with every 503")
    parser.add_argument("--decode-timeout", type=positive_float, default=5.0, metavar="S",
                        help="kill the entropy-decoder worker after S seconds on one batch")
    parser.add_argument("--max-connections", type=positive_int, default=512,
                        help="open connections; one more is answered 503 + Retry-After and "
                             "closed at once")
    parser.add_argument("--graceful-timeout", type=non_negative_float, default=10.0, metavar="S",
                        help="on SIGTERM/SIGINT, wait at most S seconds for requests in flight")
    parser.add_argument("--no-images", action="store_true",
                        help="do not serve /v1/classify-image (codec offloading): the teachers' "
                             "heads are then not loaded, only what decodes packets")
    parser.add_argument("--no-isolate-decoder", action="store_true",
                        help="entropy-decode in the server process (trusted senders only)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch intra-op threads (with --onnx: ONNX Runtime's)")
    parser.add_argument("--teacher-weights", default="auto", type=teacher_weights(),
                        help="teacher weights: auto, offline, online or a checkpoint path")
    parser.add_argument("--ssl-keyfile", default=None, type=existing_file,
                        help="TLS private key (PEM)")
    parser.add_argument("--ssl-certfile", default=None, type=existing_file,
                        help="TLS certificate (PEM)")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_weights(spec: str, onnx: bool = False) -> None:
    """Fail fast on a model whose weights file is missing, truncated or corrupted.

    Checks the sha256 recorded for the file (bundle manifest or zoo index), which catches any
    changed byte, then parses the safetensors header, which catches a truncated or malformed file
    even where no checksum is recorded (a codec file of a training run: its header must also
    record the model id and architecture). Costs one read of the file (2 MB for lite0). With
    ``onnx``, ``spec`` must be an ONNX server half, whose every file's sha256 is checked.

    Raises:
        ValueError: unknown spec, checksum mismatch or unreadable file (the message names it).
    """
    from frankensplit.files import file_sha256, read_safetensors
    from frankensplit.models.zoo_index import MODELS, ZOO_DIR
    from frankensplit.runtime.edge.bundle import OnnxServerManifest, ServerManifest, read_manifest

    codec_file = spec not in MODELS and Path(spec).is_file()
    if onnx and not Path(spec).is_dir():
        raise ValueError(f"--onnx serves ONNX server halves (folders written by `frankensplit "
                         f"export --server-onnx`), got {spec!r}")
    if Path(spec).is_dir():  # a bundle is checked without importing torch: fails in a second
        manifest = read_manifest(spec, verify=True)  # every file's sha256
        kind = OnnxServerManifest if onnx else ServerManifest
        if not isinstance(manifest, kind):
            needs = "the ONNX server half (export --server-onnx)" if onnx else "a server bundle"
            also = " (serve it with --onnx)" if isinstance(manifest, OnnxServerManifest) else ""
            raise ValueError(f"{spec} is a {manifest.format}{also}; serve needs {needs}")
        if onnx:
            return
        path = Path(spec) / manifest.codec_file
    elif codec_file:  # of a training run: no checksum recorded for it, its header is checked
        path = Path(spec)
    else:
        entry = MODELS.get(spec)
        if entry.weights is None:
            return  # random codec weights: nothing on disk
        path = ZOO_DIR / entry.weights
        if not path.is_file():
            raise ValueError(f"model {spec!r}: codec weights not found: {path}")
        if entry.sha256 is not None and (actual := file_sha256(path)) != entry.sha256:
            raise ValueError(f"model {spec!r}: checksum mismatch for {path}: expected "
                             f"{entry.sha256} (zoo index), got {actual}")
    try:
        _, meta = read_safetensors(path, "weights", tensors=False, framework="numpy")  # framing
    except ValueError as e:
        raise ValueError(f"model {spec!r}: {e}") from None
    if codec_file and not {"model_id", "architecture"} <= set(meta):
        raise ValueError(f"{spec} records no model id and architecture: serve takes a codec file "
                         "written by `frankensplit train`, a server bundle or a zoo id")


def _check_listen(args: argparse.Namespace) -> None:
    """The address resolves and the TLS files load (uvicorn would only log a bare error)."""
    import socket
    import ssl

    try:
        socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"--host {args.host}: {e.strerror} (an IP address or host name of "
                         "this machine; 127.0.0.1 for this machine only)") from None
    if bool(args.ssl_keyfile) != bool(args.ssl_certfile):
        raise ValueError("--ssl-keyfile and --ssl-certfile go together")
    if args.ssl_certfile:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(args.ssl_certfile,
                                                                     args.ssl_keyfile)
        except ssl.SSLError as e:
            raise ValueError(f"--ssl-certfile {args.ssl_certfile} and --ssl-keyfile "
                             f"{args.ssl_keyfile} are not a PEM certificate and its private key "
                             f"({e.reason or e})") from None


def run(args: argparse.Namespace) -> int:
    """Check the model names, then serve until interrupted (models load in the background)."""
    for spec in args.model:
        check_weights(spec, args.onnx)  # fail now on a typo or a bad file, not after start-up
    _check_listen(args)

    import uvicorn

    from frankensplit.runtime.server import ServerConfig, create_app
    from frankensplit.runtime.server.connections import ConnectionLimits, server_config

    token = args.token or os.environ.get("FRANKENSPLIT_TOKEN") or None
    if not _is_loopback(args.host) and token is None:
        print(f"frankensplit serve: warning: listening on {args.host} without a token",
              file=sys.stderr)
    if args.threads is not None and not args.onnx:
        import torch

        torch.set_num_threads(args.threads)

    def loader() -> list:
        if args.onnx:
            from frankensplit.runtime.server.onnx_server import load_onnx_server_model

            models = [load_onnx_server_model(spec, args.threads) for spec in args.model]
        else:
            from frankensplit.runtime.server.loading import load_server_model

            models = [load_server_model(spec, args.teacher_weights, images=not args.no_images)
                      for spec in args.model]
        ids = [m.model_id for m in models]
        if len(set(ids)) != len(ids):
            raise ValueError(f"two --model arguments load the same model id: {ids}")
        return models

    config = ServerConfig(
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue, max_in_flight=args.max_in_flight,
        request_timeout_s=args.request_timeout, body_timeout_s=args.body_timeout,
        retry_after_s=args.retry_after,
        max_body_bytes=args.max_body_bytes, token=token,
        isolate_decoder=not args.no_isolate_decoder, decode_timeout_s=args.decode_timeout,
    )
    limits = ConnectionLimits(max_connections=args.max_connections,
                              header_timeout_s=args.header_timeout, retry_after_s=args.retry_after)
    app = create_app(config=config, loader=loader)
    server = uvicorn.Server(server_config(
        app, limits, host=args.host, port=args.port, log_level=args.log_level,
        ssl_keyfile=args.ssl_keyfile, ssl_certfile=args.ssl_certfile,
        timeout_graceful_shutdown=args.graceful_timeout,
    ))
    try:
        server.run()
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown, as uvicorn.run allows
        pass
    return 0 if server.started else 3  # 3: uvicorn's start-up failure code (port in use, ...)
