"""``frankensplit serve``: the HTTP inference server (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

__all__ = ["HELP", "configure", "run"]

HELP = "serve one or more models over HTTP: POST a packet to /v1/classify, get top-k classes"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    parser.add_argument("--model", action="append", required=True, metavar="ID_OR_BUNDLE",
                        help="zoo model id or server bundle folder; repeat to serve several")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", default=None,
                        help="require this bearer token (default: $FRANKENSPLIT_TOKEN; prefer the "
                             "environment, a command line is visible to other users)")
    parser.add_argument("--max-batch", type=int, default=8, help="largest dynamic batch (1: off)")
    parser.add_argument("--max-wait-ms", type=float, default=0.0,
                        help="wait this long for more requests after the first (0: batch only "
                             "what queued while busy)")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20)
    parser.add_argument("--no-isolate-decoder", action="store_true",
                        help="entropy-decode in the server process (trusted senders only)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--teacher-weights", default="auto",
                        help="teacher weights: auto, offline, online or a checkpoint path")
    parser.add_argument("--ssl-keyfile", default=None, help="TLS private key (PEM)")
    parser.add_argument("--ssl-certfile", default=None, help="TLS certificate (PEM)")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> int:
    """Check the model names, then serve until interrupted (models load in the background)."""
    import uvicorn

    from frankensplit.runtime.loading import load_server_model, resolve_model_spec
    from frankensplit.runtime.server import ServerConfig, create_app

    for spec in args.model:
        resolve_model_spec(spec)  # fail now on a typo, not after the server is up
    if bool(args.ssl_keyfile) != bool(args.ssl_certfile):
        raise ValueError("--ssl-keyfile and --ssl-certfile go together")
    token = args.token or os.environ.get("FRANKENSPLIT_TOKEN") or None
    if not _is_loopback(args.host) and token is None:
        print(f"frankensplit serve: warning: listening on {args.host} without a token",
              file=sys.stderr)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    def loader() -> list:
        models = [load_server_model(spec, args.teacher_weights) for spec in args.model]
        ids = [m.model_id for m in models]
        if len(set(ids)) != len(ids):
            raise ValueError(f"two --model arguments load the same model id: {ids}")
        return models

    config = ServerConfig(
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_body_bytes=args.max_body_bytes, token=token,
        isolate_decoder=not args.no_isolate_decoder,
    )
    app = create_app(config=config, loader=loader)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                ssl_keyfile=args.ssl_keyfile, ssl_certfile=args.ssl_certfile)
    return 0
