"""``frankensplit demo``: the split pipeline on real photos, and the measured rate-accuracy.

1. Each photo (by default those shipped with scikit-image and matplotlib,
   :func:`frankensplit.data.bundled_photos`; or ``--images DIR``) goes through the real pipeline
   of the zoo's default model: the edge part encodes the teacher's input crop into one packet, the
   server part decodes that packet into the teacher's features and runs the rest of the teacher.
   Per photo it prints the packet's length (the bytes on the wire), the encode and decode times,
   and the teacher's top-5 on the uncompressed crop beside FrankenSplit's, with probabilities.
   A variable-rate model runs at ``--rate I``, or without it at every rate of its grid: the
   top-5 at its default rate (the zoo's ``default_rate``, what ``encode`` and ``client`` send),
   then one line per rate (bytes, times, FrankenSplit's top-1).
2. The rate-accuracy comparison is not measured on a handful of photos (that would be noise): it
   is the shipped dev-set measurement (:mod:`frankensplit.eval.shipped`: 1,286 ILSVRC-2012
   validation images, real bytes, every codec at fixed settings; ``make results`` regenerates
   it). The demo prints the bytes each codec needs at each FrankenSplit model's top-1 and writes
   the curves, the model marked, to ``--out``/rate_accuracy.png.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from frankensplit.commands._common import add_model_args, add_rate_arg, check_rate, load_model
from frankensplit.models.zoo_index import rate_setting

__all__ = ["HELP", "configure", "run"]

HELP = "run the split pipeline on real photos; plot the measured rate-accuracy against codecs"

_NAME = 28  # characters of a class name shown


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    add_model_args(parser)
    add_rate_arg(parser, every=True)
    parser.add_argument("--images", default=None,
                        help="folder of photos (default: those shipped with scikit-image)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the run (default 1, as the dev-set timings)")
    parser.add_argument("--out", default="results/demo",
                        help="folder for rate_accuracy.png (the dev-set curves)")


def _top5(logits: Any) -> list[dict[str, Any]]:
    from frankensplit.protocol import predictions

    probs = logits[0].softmax(-1)
    values, indexes = probs.topk(min(5, probs.numel()))
    return predictions(values.tolist(), indexes.tolist(), probs.numel())


def _photo(model: Any, transform: Any, path: Path, rates: Sequence[int | None]) -> dict[str, Any]:
    """One photo through the edge and the server part at each of ``rates`` (timed; None: a
    fixed-rate model's), and through the whole teacher."""
    import torch

    from frankensplit.data import load_image

    x = transform(load_image(path)).unsqueeze(0)  # (1, 3, 224, 224)
    coded = []
    for rate in rates:
        t0 = time.perf_counter()
        (packet,) = model.edge.encode(x, rate)  # g_a + rANS: the bytes the device sends
        t1 = time.perf_counter()
        logits = model.server.decode([packet])  # rANS -> y_hat -> g_s -> tail, (1, classes)
        t2 = time.perf_counter()
        coded.append({"rate": rate, "packet": packet, "encode_ms": (t1 - t0) * 1e3,
                      "decode_ms": (t2 - t1) * 1e3, "frankensplit": _top5(logits)})
    with torch.no_grad():
        reference = model.teacher(x)  # the unmodified teacher on the uncompressed crop
    return {"path": path, "pixels": x.shape[-2] * x.shape[-1], "teacher": _top5(reference),
            "coded": coded}


def _class(pred: dict[str, Any]) -> str:
    name = pred["name"] or f"class {pred['index']}"
    return f"{name[:_NAME]:{_NAME}s} {100 * pred['probability']:5.1f}%"


def _print_photo(result: dict[str, Any], name: str, coded: dict[str, Any]) -> None:
    size = len(coded["packet"])
    print(f"\n{result['path'].name}: {size:,} bytes on the wire "
          f"({size * 8 / result['pixels']:.3f} bpp), encode {coded['encode_ms']:.1f} ms, "
          f"decode {coded['decode_ms']:.1f} ms")
    print(f"   {'teacher, uncompressed crop':{_NAME + 13}s}FrankenSplit {name}, from the packet")
    for i, (t, f) in enumerate(zip(result["teacher"], coded["frankensplit"]), 1):
        print(f"   {i}. {_class(t)}   {i}. {_class(f)}")


def _print_rates(result: dict[str, Any], model: Any, header: bool = True) -> None:
    """A photo at every rate of a variable-rate model: one line per rate (``header``: the photo
    and the teacher's top-1 first, where no top-5 block above named them)."""
    if header:
        print(f"\n{result['path'].name}: teacher, uncompressed crop: "
              f"{_class(result['teacher'][0])}")
    print(f"   {'rate (lambda)':>14s} {'bytes':>7s} {'bpp':>6s} {'encode':>9s} {'decode':>9s}   "
          "FrankenSplit's top-1, from the packet")
    for coded in result["coded"]:
        size = len(coded["packet"])
        print(f"   {coded['rate']:>4d} ({model.rates[coded['rate']]:>7g}) {size:7,d} "
              f"{size * 8 / result['pixels']:6.3f} {coded['encode_ms']:6.1f} ms "
              f"{coded['decode_ms']:6.1f} ms   {_class(coded['frankensplit'][0])}")


def _ratio(fs_bytes: int, baseline: float | None) -> str:
    return "-" if baseline is None else f"{baseline:,.0f} ({fs_bytes / baseline:.2f}x)"


def _print_dev_table(doc: dict[str, Any], teacher: str, shown: str, method: str) -> None:
    """Each row of one FrankenSplit curve of ``teacher`` (the fixed-rate models, or a
    variable-rate model's rates) against the fair codecs at its top-1; the rows of ``shown``
    (`_shown`) marked."""
    from frankensplit.eval.shipped import equal_top1

    rows = equal_top1(doc, teacher, method)
    if not rows:
        return
    # A baseline that covers none of these top-1 values (the Entropic Student's curve ends below
    # them) is an empty column here; `_print_overlaps` reads it across its own range instead.
    covered = [b for b in rows[0]["baselines"] if any(r["baselines"][b] for r in rows)]
    for r in rows:
        r["baselines"] = {b: r["baselines"][b] for b in covered}
    labels = [doc["methods"][b]["label"] for b in covered]
    print(f"\nBytes per image at the top-1 of {doc['methods'][method]['label']} (baselines "
          f"interpolated on their measured curves, never extrapolated; '-': not covered; in "
          f"brackets FrankenSplit's bytes / theirs). Teacher {teacher}: "
          f"{doc['teachers'][teacher]['top1']:.2f}% uncompressed.")
    width = max(16, *(len(r["setting"]) + 2 for r in rows))
    print(f"  {'model':{width}s} {'top-1':>6s} {'FS bytes':>9s}"
          + "".join(f" {b:>15s}" for b in labels))
    for r in rows:
        mark = " *" if _shown(r["setting"], shown) else ""
        print(f"  {r['setting'] + mark:{width}s} {r['top1']:6.2f} {r['bytes_per_image']:9,d}"
              + "".join(f" {_ratio(r['bytes_per_image'], b):>15s}"
                        for b in r["baselines"].values()))
    if any(_shown(r["setting"], shown) for r in rows):
        print(f"  * {shown}, the model above")


def _print_overlaps(doc: dict[str, Any], teacher: str) -> None:
    """Each fair split-computing baseline (`split_baselines`: no image codec) against
    FrankenSplit's fixed-rate curve across the top-1 range both cover (`overlap_saving`): the
    comparison at equal top-1 where the tables above have no column for it."""
    from frankensplit.eval.schema import FRANKENSPLIT_METHOD
    from frankensplit.eval.shipped import curve, split_baselines
    from frankensplit.eval.summary import overlap_saving

    ours = curve(doc, teacher, FRANKENSPLIT_METHOD)
    for method in split_baselines(doc):
        theirs = curve(doc, teacher, method)
        label = doc["methods"][method]["label"]
        o = overlap_saving(ours, theirs)  # None without rows or a shared range
        span = (f"{min(a for _, a in theirs):.2f}-{max(a for _, a in theirs):.2f}% top-1 at "
                f"{min(b for b, _ in theirs):,.0f}-{max(b for b, _ in theirs):,.0f} bytes"
                if theirs else "no rows")
        if o is None:
            print(f"\n{label} ({span}): no top-1 range in common with FrankenSplit's fixed-rate "
                  "models.")
        else:
            print(f"\n{label} ({span}): across the top-1 both cover ({o.low:.2f}-{o.high:.2f}%), "
                  f"FrankenSplit's fixed-rate models need {100 * o.min_saving:.0f}-"
                  f"{100 * o.max_saving:.0f}% fewer bytes at equal top-1.")


def _shown(setting: str, shown: str) -> bool:
    """Whether a results row is the demo's model: ``shown`` is a setting (a model id, or
    ``<id>@<lambda>``: one rate), or a variable-rate model's id (every rate of it)."""
    return shown in (setting, _model_of(setting))


def _model_of(setting: str) -> str:
    """The model id of a split model's row (a variable-rate model's: ``<id>@<lambda>``)."""
    from frankensplit.eval.schema import split_rate_setting

    return split_rate_setting(setting)[0]


def _model_row(doc: dict[str, Any], model_id: str) -> dict[str, Any] | None:
    """A row of ``model_id`` in the shipped results (the first rate of a variable-rate one)."""
    return next((r for r in doc["rows"] if _model_of(r["setting"]) == model_id), None)


def _print_dev(doc: dict[str, Any], model_id: str, shown: str, plot: Path) -> None:
    """The shipped dev-set comparison: where it comes from, the table (``shown`` marked), the
    plot."""
    from frankensplit.eval.schema import FRANKENSPLIT_METHOD
    from frankensplit.eval.shipped import variable_rate_of

    data, row = doc["data"], _model_row(doc, model_id)
    teacher = row["teacher"] if row else next(iter(doc["teachers"]))
    print(f"\nRate-accuracy, measured once on the dev set: {data['images']:,} "
          f"{data['name']}, each image coded for real at one fixed setting per row, at commit "
          f"{doc['commit'][:7]} by `{doc['command']}`.")
    if row is None:
        print(f"({model_id} is not in the shipped results; the zoo's models are shown.)")
    for method in doc["methods"]:  # FrankenSplit's fixed-rate models, then its variable-rate
        if FRANKENSPLIT_METHOD in (method, variable_rate_of(doc, method)):
            _print_dev_table(doc, teacher, shown, method)
    _print_overlaps(doc, teacher)
    for info in doc["methods"].values():
        if not info["fair"]:  # in the file and on the results page, not in the comparison
            print(f"Not shown, not yet a fair baseline: {info['label']}: {info['note']}.")
    print(f"\nplot: {plot}\nfigures: frankensplit/zoo/results_dev.json; every row, timings and "
          "savings: docs/results.md (regenerate: make results, hours on 2 cores)")


def run(args: argparse.Namespace) -> int:
    """Run the photos through the pipeline, print the tables, write the plot."""
    from frankensplit.data import bundled_photos, find_images, make_transform
    from frankensplit.eval.shipped import load_results, plot_results
    from frankensplit.threads import torch_threads

    doc = load_results()  # a broken results file fails before the model loads
    photos = find_images(args.images) if args.images else bundled_photos()
    if not photos:
        raise ValueError("no photos: pass --images DIR (scikit-image/matplotlib photos not found)")
    with torch_threads(args.threads):
        model = load_model(args)
        check_rate(model.model_id, model.rates, args.rate, every=True)
        every = model.rates is not None and args.rate is None
        rates = range(len(model.rates)) if every else [args.rate]
        transform = make_transform(model.data_config, "eval")
        _photo(model, transform, photos[0], rates[:1])  # warm-up, untimed: first calls allocate
        results = [_photo(model, transform, p, rates) for p in photos]
    # The top-5 shown: the rate asked for, else a variable-rate model's default rate (what the
    # other commands send), else none (a codec file without a default: every rate's line only).
    top5 = args.rate if args.rate is not None else model.default_rate if every else None
    name = rate_setting(model.model_id, None if top5 is None else model.rates[top5])
    at = f" at each of its {len(model.rates)} rates" if every else ""
    print(f"FrankenSplit {name if not every else model.model_id} (teacher {model.teacher.name}) "
          f"on {len(photos)} photos{at}, batch size 1, times on this machine: encode = g_a + "
          "entropy coding (edge), decode = entropy decoding + g_s + teacher tail (server).")
    if every and top5 is not None:
        print(f"Per photo: the top-5 at its default rate {top5} (lambda {model.rates[top5]:g}), "
              "then every rate.")
    for result in results:
        if not every or top5 is not None:
            _print_photo(result, name, result["coded"][top5 if every else 0])  # rates: 0..n-1
        if every:
            _print_rates(result, model, header=top5 is None)
    print()
    for i, rate in enumerate(rates):
        sizes = [len(r["coded"][i]["packet"]) for r in results]
        same = sum(r["teacher"][0]["index"] == r["coded"][i]["frankensplit"][0]["index"]
                   for r in results)
        label = f"rate {rate} (lambda {model.rates[rate]:g}): " if every else ""
        print(f"{label}mean {sum(sizes) / len(sizes):,.0f} bytes per photo; same top-1 as the "
              f"teacher on {same} of {len(results)}.")
    row = _model_row(doc, model.model_id)
    teacher = row["teacher"] if row else next(iter(doc["teachers"]))
    # marked: the setting shown (every rate of a variable-rate model without a default: its id)
    plot = plot_results(Path(args.out) / "rate_accuracy.png", doc, teacher, highlight=name)
    _print_dev(doc, model.model_id, name, plot)
    return 0
