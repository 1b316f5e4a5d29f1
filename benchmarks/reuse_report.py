"""What encoder reuse costs here: each reuse decoder against its backbone's end-to-end codecs.

Evaluates, in one run on the dev set with real bytes at batch 1, every trained reuse model of the
zoo (a frozen lite0 edge encoder with a decoder for another backbone), the end-to-end codecs of
the same backbones (trained with the same start, recipe and budget), and the source encoders'
own models, then writes the table of :mod:`frankensplit.eval.reuse` to ``docs/reuse.md``'s
results block (between its ``<!-- reuse-table -->`` markers). Not a unit test.

    python benchmarks/reuse_report.py                 # all 1,286 dev images (~10 min, one core)
    python benchmarks/reuse_report.py --limit 32 --no-docs
    python benchmarks/reuse_report.py --results results/reuse_eval/results.json   # table only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared/data/eval/ilsvrc2012_val_dev"
DOC = REPO / "docs/reuse.md"
MARK = "<!-- reuse-table -->"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with labels.csv")
    p.add_argument("--limit", type=int, default=None, help="first N images only (quick runs)")
    p.add_argument("--out", type=Path, default=REPO / "results/reuse_eval")
    p.add_argument("--results", type=Path, default=None,
                   help="an existing results.json to tabulate instead of evaluating")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--no-docs", dest="docs", action="store_false",
                   help=f"print the table only, do not update {DOC.relative_to(REPO)}")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from frankensplit.eval.reuse import default_pairs, pair_ids, reuse_markdown, reuse_rows
    from frankensplit.models.zoo_index import MODELS

    pairs = default_pairs()
    if not pairs:
        print("no trained reuse model in the zoo (frankensplit/zoo/index.json)", file=sys.stderr)
        return 2
    results = args.results
    if results is None:
        import torch

        from frankensplit.eval import load_dataset, run_eval
        from frankensplit.models.zoo import create_model

        sources = sorted({MODELS.get(r).architecture.reuses for r in pairs})
        ids = [*sources, *pair_ids(pairs)]
        torch.set_num_threads(args.threads)
        files, labels = load_dataset(args.data, args.limit)
        result = run_eval([create_model(m) for m in ids], files, labels, args.out, {},
                          data=os.path.relpath(args.data, REPO), resume=args.resume,
                          overwrite=not args.resume, progress=True, plot=False)
        results = result.paths["json"]
    doc = json.loads(Path(results).read_text())
    table = reuse_markdown(reuse_rows(doc["rows"], pairs))
    images = doc["meta"]["images"]
    block = (f"{MARK}\n{images} images of `{doc['meta'].get('data', '?')}`, real bytes, batch 1 "
             f"(`python benchmarks/reuse_report.py`):\n\n{table}{MARK}")
    print(table)
    if args.docs and args.limit is None and args.results is None:
        text = DOC.read_text()
        if text.count(MARK) != 2:
            print(f"{DOC} lacks the two {MARK} markers", file=sys.stderr)
            return 2
        DOC.write_text(re.sub(f"{MARK}.*{MARK}", lambda _: block, text, flags=re.DOTALL))
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
