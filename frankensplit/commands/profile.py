"""``frankensplit profile``: time every stage of both pipelines on this machine -> profile JSON.

    frankensplit profile [--model M [--rate I]] [--images DIR] [--threads 1,2] [--repeat 5]
                         [--teachers paper | swin_s3_base_224,convnext_tiny,...] [--out profile.json]

Without ``--images`` it times the real photos shipped with scikit-image (and matplotlib), so it
runs on any machine with the package installed. Besides both pipelines it times local execution
(the whole teacher on the edge) and, with ``--teachers``, larger teachers' server side and local
execution from their architecture-only zoo entries with random weights (latency does not depend
on weights; nothing is said about their accuracy). A variable-rate model is profiled at
``--rate I`` (default: a zoo model's default rate): its packets (bytes, entropy coding and
decoding) are that rate's, and the profile records the rate, so that ``simulate`` prices that
rate's evaluated bytes. The JSON layout is documented in :mod:`frankensplit.sim.profile`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from frankensplit.cli import check_model, non_negative_int, positive_int
from frankensplit.commands._common import add_model_args, add_rate_arg, check_rate, load_model

__all__ = ["HELP", "configure", "parse_teachers", "parse_threads", "run"]

HELP = "measure edge, server and codec compute times on this machine (a device profile JSON)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    add_model_args(parser)
    add_rate_arg(parser)
    parser.add_argument("--images", default=None,
                        help="folder of photos (default: those shipped with scikit-image)")
    parser.add_argument("--limit", type=positive_int, default=None, help="first N images only")
    parser.add_argument("--threads", default="1,2",
                        help="edge intra-op thread counts, comma-separated (default 1,2)")
    parser.add_argument("--server-threads", type=positive_int, default=None,
                        help="torch threads of the server stages (default: torch's default)")
    parser.add_argument("--repeat", type=positive_int, default=5,
                        help="timed runs per image and stage")
    parser.add_argument("--warmup", type=non_negative_int, default=1,
                        help="untimed runs before them")
    parser.add_argument("--codecs", default=None,
                        help="codecs, comma-separated, or 'none' (default: jpeg,webp,avif,jxl, "
                             "those available here)")
    parser.add_argument("--qualities", action="append", default=[], metavar="[CODEC=]Q1,Q2",
                        help="qualities to time, for every codec or one (default: a low, middle "
                             "and high setting per codec)")
    parser.add_argument("--bundle", default=None,
                        help="edge bundle of the model (default: export one to a temporary folder)")
    parser.add_argument("--teachers", default=None, metavar="paper | NAME[,NAME...]",
                        help="also time larger teachers' server side (g_s + tail on this model's "
                             "packets, whole teacher) and local execution, with RANDOM weights "
                             "(latency only): 'paper' = swin_s3_base_224,convnext_tiny,resnet50, "
                             "or timm names with an architecture-only zoo entry")
    parser.add_argument("--out", default="profile.json", help="profile JSON to write")


def parse_threads(text: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``.

    Raises:
        ValueError: not positive integers, or none.
    """
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--threads must be integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"--threads must list positive integers, got {text!r}")
    return sorted(set(values))


def parse_teachers(text: str | None) -> list[str]:
    """``"paper"`` or ``"swin_s3_base_224,resnet50"`` -> architecture-only zoo ids, in order.

    Raises:
        ValueError: a teacher without an architecture-only zoo entry (the message lists them).
    """
    from frankensplit.sim.profile import WHAT_IF_TEACHERS, what_if_model_id

    if not text:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["paper"]:
        names = list(WHAT_IF_TEACHERS)
    return list(dict.fromkeys(what_if_model_id(n) for n in names))


def _codecs(args: argparse.Namespace) -> dict[str, tuple[float, ...]]:
    from frankensplit.codecs import parse_codecs, parse_qualities
    from frankensplit.sim.measure import PROFILE_QUALITIES

    names, _ = parse_codecs(args.codecs)  # default: those of jpeg, webp, avif, jxl available
    given = parse_qualities(args.qualities, names)
    out = {}
    for name in names:
        qualities = given[name] or PROFILE_QUALITIES.get(name)
        if qualities is None:
            from frankensplit.codecs import create_codec

            qualities = create_codec(name).qualities[::3]
        out[name] = tuple(qualities)
    return out


def _images(args: argparse.Namespace) -> list:
    from frankensplit.data import bundled_photos, find_images

    images = find_images(args.images) if args.images else bundled_photos()
    if args.limit is not None:
        images = images[: args.limit]
    if not images:
        raise ValueError(f"no images found in {args.images or 'the installed packages'}")
    return images


def run(args: argparse.Namespace) -> int:
    """Measure, write the JSON, print the table."""
    import torch

    from frankensplit.sim.measure import measure_profile
    from frankensplit.sim.profile import format_profile, write_profile

    threads = parse_threads(args.threads)
    if args.model is not None:
        check_model(args.model)
    if args.bundle is not None and not Path(args.bundle).is_dir():
        raise ValueError(f"--bundle {args.bundle} not found: `frankensplit export --model M --out "
                         "DIR` writes one to DIR/edge")
    if args.server_threads is not None:
        torch.set_num_threads(args.server_threads)
    images = _images(args)
    codecs = _codecs(args)
    what_if_ids = parse_teachers(args.teachers)
    model = load_model(args)
    rate = check_rate(model.model_id, model.rates, args.rate, default=model.default_rate)
    what_if = []
    for model_id in what_if_ids:
        from frankensplit.sim.measure_teachers import what_if_model

        print(f"what-if teacher: {model_id} with RANDOM weights (latency only; its accuracy is "
              "not measured)", file=sys.stderr)
        what_if.append(what_if_model(model_id, model))
    profile = measure_profile(model, images, threads, args.repeat, args.warmup, codecs,
                              server_threads=args.server_threads, bundle=args.bundle,
                              what_if=what_if, rate=rate)
    path = write_profile(profile, args.out)
    print(format_profile(profile))
    print(f"wrote {path}", file=sys.stderr)
    return 0
