"""``frankensplit client``: encode images on the edge (no torch) and classify them on a server."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["HELP", "configure", "run"]

HELP = "encode images with an edge bundle (no torch) and send them to a frankensplit server"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--bundle", required=True, help="edge bundle folder (from `export`)")
    parser.add_argument("--url", default=None,
                        help="server base URL, e.g. http://127.0.0.1:8000 (omit to only encode)")
    parser.add_argument("--save", default=None, metavar="DIR",
                        help="also write each packet to DIR/<image stem>.fsb")
    parser.add_argument("--topk", type=int, default=5, help="classes to ask for")
    parser.add_argument("--token", default=None,
                        help="bearer token (default: $FRANKENSPLIT_TOKEN)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per attempt")
    parser.add_argument("--retries", type=int, default=3, metavar="N",
                        help="retry a request up to N times on 503/502/504/429 or a failed "
                             "connection, with exponential backoff and the server's Retry-After "
                             "(0: never; other 4xx errors never are)")
    parser.add_argument("--deadline", type=float, default=60.0, metavar="S",
                        help="give up on a request (all attempts and waits) after S seconds")
    parser.add_argument("--cafile", default=None,
                        help="CA certificate (PEM) to trust for an https server, e.g. self-signed")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")


def _line(image: str, packet_bytes: int, answer: dict | None) -> str:
    if answer is None:
        return f"{image}: {packet_bytes} B"
    top = answer["predictions"][0]
    name = top["name"] if top["name"] is not None else f"class {top['index']}"
    return (f"{image}: {name} (p={top['probability']:.3f}) [{packet_bytes} B, "
            f"server decode {answer['decode_ms']:.1f} ms]")


def run(args: argparse.Namespace) -> int:
    """Encode (and classify) each image; print one line per image."""
    from frankensplit.runtime.client import EdgeClient, RetryPolicy, post_packet

    if args.url is None and args.save is None:
        raise ValueError("nothing to do: pass --url to classify and/or --save to keep packets")
    retry = RetryPolicy(retries=args.retries, deadline_s=args.deadline)
    token = args.token or os.environ.get("FRANKENSPLIT_TOKEN")
    client = EdgeClient(args.bundle, threads=args.threads)
    save = Path(args.save) if args.save else None
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
    for image in args.images:
        packet = client.encode(image)
        if save is not None:
            (save / f"{Path(image).stem}.fsb").write_bytes(packet)
        answer = None
        if args.url is not None:
            answer = post_packet(args.url, packet, topk=args.topk, token=token,
                                 timeout=args.timeout, cafile=args.cafile, retry=retry)
        if args.json:
            print(json.dumps({"image": image, "packet_bytes": len(packet), "answer": answer}))
        else:
            print(_line(image, len(packet), answer), file=sys.stdout)
    return 0
