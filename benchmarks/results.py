"""Regenerate the README's results: every trained zoo model against codecs and learned baselines.

Runs ``frankensplit eval`` (the library behind it) on the dev split of ``../shared/data`` and writes
``results/README_results.md``, published as ``docs/results.md`` with its plot (not for ``--limit``
runs). The trained zoo models are FrankenSplit's and the Entropic Student
baseline's (``es-lite0-*``); the codecs are JPEG, WebP, AVIF, JPEG XL and the shipped Balle 2018
factorized prior (``bmshj2018-factorized``, ``frankensplit/zoo/bmshj2018``). It writes the result
tables, the "bytes to stay within 1 / 3 points of the teacher" figures and FrankenSplit's rate
saving at equal top-1 against each, with the plot beside it (eval files in
``OUT/readme_eval``); a variable-rate model (``Architecture.rates``) is a curve of its own there,
a row per rate. The same rows go to ``OUT/results_dev.json``, published as
``frankensplit/zoo/results_dev.json`` with the command and the commit measured at (what
``frankensplit demo`` plots, :mod:`frankensplit.eval.shipped`). The encoder-reuse models and their
backbones' end-to-end codecs are measured in a second run without codecs (``OUT/reuse_eval``,
the folder ``benchmarks/reuse_report.py`` uses too) and tabulated below. The record logs make it resumable: rerun with ``--resume`` after an
interruption. Not a unit test.

    python benchmarks/results.py                       # all 1,286 images (hours on 2 CPU cores)
    python benchmarks/results.py --limit 16            # quick look at the pipeline
    python benchmarks/results.py --models fs-lite0-untrained --limit 16   # no trained model yet
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared/data/eval/ilsvrc2012_val_dev"
DEFAULT_OUT = REPO / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with labels.csv")
    p.add_argument("--limit", type=int, default=None, help="first N images only (quick runs)")
    p.add_argument("--models", default=None,
                   help="comma-separated model ids (default: every trained zoo model)")
    p.add_argument("--codecs", default="jpeg,webp,avif,jxl,bmshj2018-factorized",
                   help="comma-separated codecs")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="folder for README_results.md; the eval files go to OUT/readme_eval")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--remeasure", default="",
                   help="with --resume: model ids retrained under their id, measured again")
    p.add_argument("--threads", type=int, default=1, help="torch threads (timings: one core)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-docs", dest="docs", action="store_false",
                   help="do not write docs/results.md and docs/results_rate_accuracy.png")
    return p.parse_args(argv)


def result_order(entry: Any) -> tuple:
    """Where a zoo entry's rows go: by teacher and encoder, the fixed-rate models by ascending
    lambda, then a variable-rate model (no single lambda: ``architecture.rates`` holds its grid;
    its rows, one per rate, follow in its grid's order), by the largest lambda of its grid. Ties
    keep the index's order."""
    arch = entry.architecture
    if arch.rates is None:
        return (arch.teacher, arch.encoder, 0, entry.lmbda or 0)
    return (arch.teacher, arch.encoder, 1, max(arch.rates))


def trained_models() -> list[str]:
    """Ids of the zoo models that ship trained codec weights in the order of the result rows
    (`result_order`)."""
    from frankensplit.models.zoo import MODELS, list_models

    entries = [e for e in map(MODELS.get, list_models()) if e.trained]
    return [e.model_id for e in sorted(entries, key=result_order)]


def published_args(argv: Sequence[str]) -> list[str]:
    """The arguments of the command the results page names: what was measured, without how this
    run got there (resuming, remeasuring retrained models, the progress bar)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--remeasure":
            skip = True
        elif a not in ("--resume", "--no-progress") and not a.startswith("--remeasure="):
            out.append(a)
    return out


REMEASURED_FILE = "remeasured.json"


def remeasured_since_fresh(out: Path, again: Sequence[str], resume: bool) -> list[str]:
    """The models measured again (``--remeasure``) since the last fresh run into ``out``, this
    run's ``again`` included: the results page names them all, not only this run's (their timings
    come from later runs than the codec rows'). A fresh run (no ``resume``) starts the list anew.
    Recorded in ``out/remeasured.json``."""
    path = Path(out) / REMEASURED_FILE
    earlier = json.loads(path.read_text()) if resume and path.is_file() else []
    ids = list(dict.fromkeys([*earlier, *again]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ids) + "\n")
    return ids


def readme_section(markdown: str, command: str, plot: str, partial: bool,
                   remeasured: Sequence[str] = ()) -> str:
    """The README results section around the eval's summary tables."""
    note = ("\n> Partial run (`--limit`): not the figures to publish.\n" if partial else "")
    if remeasured:  # same accuracy and bytes as a fresh run; the clocks are another run's
        note += (f"\n> {', '.join(f'`{m}`' for m in remeasured)}: retrained and measured again "
                 "in a later run (`--remeasure`) than the other rows; their timings are that "
                 "run's, on a differently loaded machine.\n")
    return (
        "## Results\n\n"
        "FrankenSplit against standard codecs and a learned image codec (Balle 2018, MSE) feeding\n"
        "the same unmodified teacher, and against the Entropic Student trained with the same data\n"
        "and budget; every image at batch size 1 with real coding (rates are real bytes, headers\n"
        "and containers included).\n"
        f"Regenerate with `{command}`.\n{note}\n"
        f"![rate-accuracy]({plot})\n\n{markdown}"
    )


def git_commit() -> tuple[str, bool]:
    """The commit checked out here and whether tracked files differ from it ("unknown" outside a
    clone)."""
    def git(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(REPO), *a], check=False, capture_output=True,
                              text=True)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown", False
        return head.stdout.strip(), git("diff", "--quiet", "HEAD", "--").returncode != 0
    except OSError:  # no git here
        return "unknown", False


def shipped_results(result: Any, data: Path, command: str, remeasured: Sequence[str]) -> dict:
    """The results file (``frankensplit/zoo/results_dev.json``'s layout) of the codec run."""
    from frankensplit.eval.shipped import results_document

    commit, dirty = git_commit()
    name = ("ILSVRC-2012 validation images (dev split)"
            if data.resolve() == DEFAULT_DATA.resolve() else data.name)
    source = "the records of this run (OUT/readme_eval)" + (
        "; the working tree differed from the commit" if dirty else "")
    return results_document(result.rows, result.meta, data_name=name, command=command,
                            commit=commit, source=source, remeasured=remeasured)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from frankensplit.eval import load_dataset, run_eval
    from frankensplit.eval.report import summary_markdown
    from frankensplit.eval.reuse import default_pairs, pair_ids, reuse_markdown, reuse_rows
    from frankensplit.eval.shipped import RESULTS_FILE, write_results
    from frankensplit.models.zoo import create_model

    models = args.models.split(",") if args.models else trained_models()
    if not models:
        print("no trained model in the zoo (frankensplit/zoo/index.json); pass --models ID,...",
              file=sys.stderr)
        return 2
    # Encoder reuse (issue 14) is measured in a run of its own, without codecs: every codec
    # setting is swept once per teacher and preprocessing, and the reuse models bring four of
    # those (Lite1/Lite2 at 224 px and at their own size): four times the lite0 sweep's hours for
    # rows the reuse table never reads.
    pairs = {r: e2e for r, e2e in default_pairs().items() if r in models and set(e2e) <= set(models)}
    reuse_ids = pair_ids(pairs)
    codec_ids = [m for m in models if m not in reuse_ids]
    if not codec_ids:
        print("every model given is a reuse model or its reference: use benchmarks/reuse_report.py",
              file=sys.stderr)
        return 2
    again = [m for m in args.remeasure.split(",") if m]
    unknown = sorted(set(again) - set(models))
    if unknown:
        print(f"--remeasure {','.join(unknown)}: not among the models evaluated", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    files, labels = load_dataset(args.data, args.limit)
    common = {"data": os.path.relpath(args.data, REPO), "resume": args.resume,
              "overwrite": not args.resume, "progress": not args.no_progress}
    # Before the runs: a fresh run that stops half-way must not leave the previous list behind,
    # and a remeasure that stops after dropping records must still be named when resumed.
    remeasured = remeasured_since_fresh(args.out, again, args.resume)
    eval_dir = args.out / "readme_eval"
    # Each run remeasures its own models: run_eval refuses ids it does not evaluate.
    result = run_eval([create_model(m) for m in codec_ids], files, labels, eval_dir,
                      {c: None for c in args.codecs.split(",") if c},
                      remeasure=[m for m in again if m in codec_ids], **common)
    command = "python benchmarks/results.py" + "".join(
        f" {shlex.quote(a)}" for a in published_args(sys.argv[1:] if argv is None else argv))
    markdown = summary_markdown(result.rows, result.summary, result.meta)
    if pairs:
        reuse = run_eval([create_model(m) for m in reuse_ids], files, labels,
                         args.out / "reuse_eval", {}, plot=False,
                         remeasure=[m for m in again if m in reuse_ids], **common)
        markdown += ("\n### Encoder reuse\n\nEach reuse decoder against its backbone's end-to-end "
                     "codecs at the reuse model's bytes ([reuse.md](reuse.md); rows of "
                     "`reuse_eval/`):\n\n"
                     + reuse_markdown(reuse_rows(reuse.rows, pairs)))
    partial = args.limit is not None
    named = [m for m in remeasured if m in models]
    text = readme_section(markdown, command, os.path.relpath(result.paths["plot"], args.out),
                          partial, named)
    (args.out / "README_results.md").write_text(text)
    shipped = shipped_results(result, args.data, command, [m for m in named if m in codec_ids])
    write_results(args.out / "results_dev.json", shipped)
    print(f"wrote {args.out / 'README_results.md'}, {args.out / 'results_dev.json'} and "
          f"{eval_dir}/")
    if args.docs and not partial:  # the published copy: docs/results.md and its plot
        docs = REPO / "docs"
        shutil.copyfile(result.paths["plot"], docs / "results_rate_accuracy.png")
        (docs / "results.md").write_text(
            "# " + readme_section(markdown, command, "results_rate_accuracy.png", False,
                                  named)[3:])
        write_results(RESULTS_FILE, shipped)
        print(f"wrote {docs / 'results.md'}, {docs / 'results_rate_accuracy.png'} and "
              f"{RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
