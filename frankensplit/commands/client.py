"""``frankensplit client``: encode images on the edge (no torch) and classify them on a server.

A variable-rate bundle (one encoder, every rate) encodes at ``--rate I``, a rate index (0 = the
lowest bit rate; ``frankensplit info`` and the bundle's manifest list each index's lambda), or
without it at the bundle's default rate (a zoo model's, recorded at export). Why an
index and not a lambda: the index is what the packet carries and what every listing numbers, while
a lambda is a float ("4", "4.0") that could also be read as an index. With ``--deadline-ms D``,
each image goes at the most accurate rate predicted to arrive within D
(``runtime/edge/rate_choice.py``), chosen among the rates of one variable-rate bundle or of several
``--bundle`` folders (one per rate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from frankensplit.cli import (
    existing_file,
    non_negative_int,
    positive_float,
    positive_int,
)

__all__ = ["HELP", "configure", "run"]

HELP = "encode images with an edge bundle (no torch) and send them to a frankensplit server"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--bundle", required=True, action="append", metavar="DIR",
                        help="edge bundle folder (from `export`); repeat it, one per rate, with "
                             "--deadline-ms")
    parser.add_argument("--rate", type=non_negative_int, default=None, metavar="I",
                        help="rate index of a variable-rate bundle (0 = lowest bit rate; the "
                             "bundle's manifest lists each index's lambda; default: the bundle's "
                             "default rate, where its model has one)")
    parser.add_argument("--url", default=None,
                        help="server base URL, e.g. http://127.0.0.1:8000 (omit to only encode)")
    parser.add_argument("--deadline-ms", type=positive_float, default=None, metavar="D",
                        help="latency budget per image (image to answer): send each at the most "
                             "accurate rate predicted to make it, else the lowest; needs --url")
    parser.add_argument("--save", default=None, metavar="DIR",
                        help="also write each packet to DIR/<image stem>.fsb")
    parser.add_argument("--topk", type=positive_int, default=5, help="classes to ask for")
    parser.add_argument("--backbone", default=None, metavar="ID_OR_TIMM_NAME",
                        help="which server backbone decodes the packets: a decoder's model id or "
                             "its teacher's timm name (default: the encoder's own model; "
                             "GET /v1/models lists them per encoder)")
    parser.add_argument("--token", default=None,
                        help="bearer token (default: $FRANKENSPLIT_TOKEN)")
    parser.add_argument("--threads", type=positive_int, default=None, help="onnxruntime threads")
    parser.add_argument("--timeout", type=positive_float, default=30.0,
                        help="seconds per attempt")
    parser.add_argument("--retries", type=non_negative_int, default=3, metavar="N",
                        help="retry a request up to N times on 503/502/504/429 or a failed "
                             "connection, with exponential backoff and the server's Retry-After "
                             "(0: never; other 4xx errors never are)")
    parser.add_argument("--deadline", type=positive_float, default=60.0, metavar="S",
                        help="give up on a request (all attempts and waits) after S seconds "
                             "(the retry deadline; the latency budget is --deadline-ms)")
    parser.add_argument("--cafile", default=None, type=existing_file,
                        help="CA certificate (PEM) to trust for an https server, e.g. self-signed")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")


def _line(image: str, packet_bytes: int, answer: dict | None, rate: dict | None = None) -> str:
    at = "" if rate is None else f" at rate {rate['rate_index']} (lambda {rate['lambda']:g})"
    if answer is None:
        return f"{image}: {packet_bytes} B{at}"
    top = answer["predictions"][0]
    name = top["name"] if top["name"] is not None else f"class {top['index']}"
    line = (f"{image}: {name} (p={top['probability']:.3f}) [{packet_bytes} B{at}, "
            f"server decode {answer['decode_ms']:.1f} ms]")
    if (rate := answer.get("rate")) is not None:
        uplink = rate["estimate"]["uplink_mbit_per_s"]
        name = rate["model_id"] if rate.get("lambda") is None else \
            f"{rate['model_id']}@{rate['lambda']:g}"
        line += (f" [rate {name} ({rate['reason']}), {answer['latency_ms']:.0f} ms of "
                 f"{rate['deadline_ms']:g}, uplink estimate "
                 f"{'-' if uplink is None else f'{uplink:.3g} Mbit/s'}]")
    return line


def _post_kwargs(args: argparse.Namespace) -> dict:
    from frankensplit.runtime.edge.client import RetryPolicy

    return {"topk": args.topk, "token": args.token or os.environ.get("FRANKENSPLIT_TOKEN"),
            "timeout": args.timeout, "cafile": args.cafile, "backbone": args.backbone,
            "retry": RetryPolicy(retries=args.retries, deadline_s=args.deadline)}


def _check(args: argparse.Namespace) -> None:
    """What can be wrong before the first image is encoded or a server is asked."""
    from frankensplit import protocol

    protocol.parse_topk(args.topk)  # 1..1000, as the server takes it
    for bundle in args.bundle:
        if not Path(bundle).is_dir():
            raise ValueError(f"edge bundle {bundle} not found: `frankensplit export --model M "
                             "--out DIR` writes one to DIR/edge")
    if args.cafile is not None:
        import ssl

        try:
            ssl.create_default_context(cafile=args.cafile)
        except ssl.SSLError as e:
            raise ValueError(f"--cafile {args.cafile} is not a PEM CA certificate: "
                             f"{e.reason or e}") from None


def _run_rate_choice(args: argparse.Namespace) -> int:
    from frankensplit.runtime.edge.rate_choice import RateClient

    if args.url is None:
        raise ValueError("--deadline-ms chooses a rate by the link: it needs --url")
    if args.save is not None:
        raise ValueError("--save is for one bundle; with --deadline-ms the answer's JSON names "
                         "the rate each image was sent at")
    if args.rate is not None:
        raise ValueError("--rate and --deadline-ms exclude each other: --deadline-ms chooses "
                         "the rate per image")
    client = RateClient(args.bundle, args.deadline_ms, threads=args.threads,
                        warmup=args.images[0])
    client.probe(args.url)
    post = _post_kwargs(args)
    for image in args.images:
        answer = client.classify(args.url, image, **post)
        if args.json:
            rate, size = answer.pop("rate"), answer.pop("packet_bytes")
            print(json.dumps({"image": image, "packet_bytes": size,
                              "latency_ms": answer.pop("latency_ms"), "rate": rate,
                              "answer": answer}))
        else:
            print(_line(image, answer["packet_bytes"], answer), file=sys.stdout)
    return 0


def run(args: argparse.Namespace) -> int:
    """Encode (and classify) each image; print one line per image."""
    from frankensplit.accepts import describe_rates
    from frankensplit.runtime.edge.client import EdgeClient, post_packet

    _check(args)
    if args.deadline_ms is not None:
        return _run_rate_choice(args)
    if len(args.bundle) > 1:
        raise ValueError(f"{len(args.bundle)} bundles given: several rates need --deadline-ms "
                         "to choose between them")
    if args.url is None and args.save is None:
        raise ValueError("nothing to do: pass --url to classify and/or --save to keep packets")
    post = _post_kwargs(args)
    client = EdgeClient(args.bundle[0], threads=args.threads)
    index = client.default_rate if args.rate is None else args.rate
    if (client.rates is None) != (index is None):
        if client.rates is None:
            raise ValueError(f"--rate {args.rate}: {args.bundle[0]} is a fixed-rate bundle")
        raise ValueError(f"{args.bundle[0]} is a variable-rate bundle: pass --rate I, one of "
                         f"{describe_rates(client.rates)}, or --deadline-ms to choose per image")
    if index is not None and index >= len(client.rates):
        raise ValueError(f"--rate {args.rate}: {args.bundle[0]} has rates 0..{len(client.rates) - 1}")
    rate = None if index is None else {  # the keys of --deadline-ms's "rate"
        "model_id": client.model_id, "rate_index": index, "lambda": client.rates[index]}
    save = Path(args.save) if args.save else None
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
    for image in args.images:
        packet = client.encode(image, index)
        if save is not None:
            (save / f"{Path(image).stem}.fsb").write_bytes(packet)
        answer = None
        if args.url is not None:
            answer = post_packet(args.url, packet, **post)
        if args.json:
            print(json.dumps({"image": image, "packet_bytes": len(packet),
                              **({} if rate is None else {"rate": rate}), "answer": answer}))
        else:
            print(_line(image, len(packet), answer, rate), file=sys.stdout)
    return 0
