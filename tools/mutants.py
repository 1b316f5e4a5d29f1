"""Mutation check: plausible bugs, each applied to a temporary copy of the tree, must fail the tests.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python tools/mutants.py [NAME ...] [--list] [--full]
        [--worktree] [--no-baseline] [--keep]

``make mutants`` runs it; it is not part of the default test run. The copy is the committed tree
(``git archive HEAD``; ``--worktree``: the tracked and untracked files of the working tree, to try
tests before committing them) in a temporary folder beside a link to ``../shared``, and it runs
with ``PYTHONPATH`` at the copy (the venv's editable install points at this checkout; the first
run checks that the copy's package is the one imported).

First the unmutated copy runs every test the mutants name: they must pass, or the check is void.
Then, per mutant: its edit (a text that must occur exactly once in its file, so a mutant whose
code has moved is reported ``stale`` rather than ``caught``), ``pytest -x`` on the tests that
should catch it (``--full``: the whole default suite), and the edit undone. A mutant is ``caught``
when pytest fails and ``SURVIVED`` when it passes. One line per mutant; the exit code is 1 when
any survived or is stale.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """One plausible bug: replace ``old`` by ``new`` in ``path`` (or call ``apply`` on the copy)."""

    name: str
    description: str
    path: str
    old: str = ""
    new: str = ""
    tests: tuple[str, ...] = ()
    apply: Callable[[Path], None] | None = None


def _weaker_default(root: Path) -> None:
    """Make the least accurate shipped FrankenSplit model of the default's teacher the default."""
    path = root / "frankensplit/zoo/index.json"
    index = json.loads(path.read_text())
    entries = {m["model_id"]: m for m in index["models"]}
    default = entries[index["default"]]
    same = [m for m in index["models"] if m.get("weights") and m["teacher"] == default["teacher"]
            and m.get("encoder", "frankensplit") == default.get("encoder", "frankensplit")]
    weakest = min(same, key=lambda m: m["metrics"]["fixture16_top1"])
    if weakest["model_id"] == default["model_id"]:
        raise ValueError("the default is already the weakest shipped model")
    index["default"] = weakest["model_id"]
    path.write_text(json.dumps(index, indent=2) + "\n")


MUTANTS = (
    Mutant("batch-swap", "the server answers each packet of a batch with another's result",
           "frankensplit/runtime/server/service.py",
           "protocol.predictions(probs[row], indexes[row], classes,",
           "protocol.predictions(probs[-1 - row], indexes[-1 - row], classes,",
           ("tests/test_runtime_server.py", "tests/test_reliability_runtime.py")),
    Mutant("client-rounding", "the edge client rounds half up instead of half to even",
           "frankensplit/coding.py",
           "return np.rint(y - self.medians[:, None, None]).astype(np.int32)",
           "return np.floor(y - self.medians[:, None, None] + 0.5).astype(np.int32)",
           ("tests/test_runtime_client.py",)),
    Mutant("weaker-default", "index.json's default is the least accurate shipped model",
           "frankensplit/zoo/index.json", tests=("tests/test_zoo_figures.py",),
           apply=_weaker_default),
    Mutant("cli-imports-torch", "the CLI module imports torch at start-up",
           "frankensplit/cli.py", "import importlib\nimport math\nimport os\nimport sys\n",
           "import importlib\nimport math\nimport os\nimport sys\n\nimport torch  # noqa: F401\n",
           ("tests/test_runtime_client.py::test_cli_client_does_not_import_torch",
            "tests/test_runtime_client.py::test_command_modules_import_lazily")),
    Mutant("ddp-no-average", "DDP ranks step on their own gradient (no DistributedDataParallel)",
           "frankensplit/train/start.py",
           "        net = DistributedDataParallel(net, find_unused_parameters=True)\n",
           "        pass  # mutant: no gradient averaging\n",
           ("tests/test_train.py::test_ddp_two_processes_on_cpu",)),
    Mutant("aux-grad-summed", "the aux step's all-reduce sums the ranks' gradients",
           "frankensplit/train/distributed.py", "    return value / info.world_size\n",
           "    return value\n", ("tests/test_train.py::test_ddp_two_processes_on_cpu",
                                "tests/test_ddp_union.py")),
    Mutant("no-optimizer-step", "the training loop never steps the codec's optimizer",
           "frankensplit/train/loop.py", "\n        opt.step()\n", "\n        pass\n",
           ("tests/test_baselines.py::test_training_moves_every_trained_part",)),
    Mutant("saliency-ignored", "the saliency map never reaches the loss",
           "frankensplit/train/objectives.py", "step.lmbda, s, layout, step.c)",
           "step.lmbda, None, layout, step.c)",
           ("tests/test_saliency.py::test_the_saliency_map_weighs_the_distortion",)),
    Mutant("seed-from-hash", "untrained codecs seeded from Python's per-process hash()",
           "frankensplit/models/architecture.py",
           "torch.manual_seed(zlib.crc32(model_id.encode()))",
           "torch.manual_seed(hash(model_id) & 0xFFFFFFFF)",
           ("tests/test_models.py::test_untrained_zoo_models_are_identical_across_processes",)),
    Mutant("eval-bilinear", "the eval preprocessing resizes bilinearly, not as the teacher",
           "frankensplit/data/transforms.py", "    return size, interp\n",
           "    return size, T.InterpolationMode.BILINEAR\n", ("tests/test_zoo_figures.py",)),
    Mutant("reuse-own-id", "a reuse model's packets name the decoder, not the source encoder",
           "frankensplit/models/split.py",
           "return self.architecture.reuses or self.model_id",
           "return self.model_id", ("tests/test_reuse_serving.py",)),
    Mutant("es-teacher-tail", "the server half ignores a fine-tuned tail (Entropic Student s2)",
           "frankensplit/models/split.py",
           "return self.teacher.tail if self.tail is None else self.tail",
           "return self.teacher.tail",
           ("tests/test_recipe.py::test_entropic_student_second_stage_trains_decoder_and_own_tail_only",)),
    Mutant("reuse-cold-start", "init_g_s is ignored: a new teacher's blueprint starts fresh",
           "frankensplit/train/start.py", 'if cfg.init_g_s is True and "g_s" not in parts:',
           "if False:",
           ("tests/test_train.py::test_reuse_warm_start_and_the_edge_input_size_reach_the_trained_file",)),
    Mutant("refit-ignores-old-decoder", "init_g_s: a file is ignored: a refitted reuse decoder "
           "starts from the new source's lite0 decoder or a fresh seed",
           "frankensplit/train/start.py", "if isinstance(cfg.init_g_s, str):", "if False:",
           ("tests/test_train.py::test_init_g_s_file_refits_a_reuse_decoder_on_a_retrained_source",)),
    Mutant("eval-one-preprocessing", "models of one backbone at two input sizes share teacher rows",
           "frankensplit/eval/runner.py",
           "return name if own else", "return name if True else",
           ("tests/test_eval.py::test_one_backbone_at_two_input_sizes_gets_two_teacher_groups",)),
)


def _copy_tree(dest: Path, worktree: bool) -> Path:
    """The tree to mutate at ``dest/repo``, with ``dest/shared`` linking to ``../shared``."""
    root = dest / "repo"
    root.mkdir(parents=True)
    if worktree:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                               check=True, capture_output=True).stdout.decode().split("\0")
        for name in filter(None, files):
            if (REPO / name).is_file():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, root / name)
    else:
        archive = dest / "head.tar"
        subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), "HEAD"], cwd=REPO,
                       check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
        archive.unlink()
    (dest / "shared").symlink_to((REPO.parent / "shared").resolve())
    return root


def _pytest(root: Path, tests: Sequence[str]) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                           *tests], cwd=root, env=env, capture_output=True, text=True,
                          check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    summary = lines[0] if lines else (done.stdout.strip().splitlines() or [""])[-1]
    return done.returncode, summary, time.monotonic() - start


def _check_import(root: Path) -> None:
    out = subprocess.run([sys.executable, "-c", "import frankensplit; print(frankensplit.__file__)"],
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, check=True,
                         capture_output=True, text=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"the copy imports frankensplit from {out}, not from {root}")


def _mutate(root: Path, mutant: Mutant) -> str | None:
    """Apply ``mutant`` in place; returns the original text (None: stale, nothing applied)."""
    path = root / mutant.path
    text = path.read_text()
    if mutant.apply is not None:
        mutant.apply(root)
        return text
    if text.count(mutant.old) != 1:
        return None
    path.write_text(text.replace(mutant.old, mutant.new))
    return text


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="mutants to run (default: all)")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--full", action="store_true", help="run the whole suite (-x) per mutant")
    p.add_argument("--worktree", action="store_true", help="copy the working tree, not HEAD")
    p.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    p.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = p.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:18} {m.description}  [{m.path}; {', '.join(m.tests)}]")
        return 0
    if unknown := sorted(set(args.names) - set(known)):
        raise SystemExit(f"unknown mutants {unknown}; known: {sorted(known)}")
    todo = [known[n] for n in args.names] if args.names else list(MUTANTS)
    tmp = Path(tempfile.mkdtemp(prefix="frankensplit-mutants-"))
    try:
        root = _copy_tree(tmp, args.worktree)
        _check_import(root)
        print(f"copy of {'the working tree' if args.worktree else 'HEAD'} at {root}", flush=True)
        if not args.no_baseline:
            tests = [] if args.full else sorted({t for m in todo for t in m.tests})
            code, summary, seconds = _pytest(root, tests)
            print(f"{'baseline':18} {'passes' if code == 0 else 'FAILS'} ({seconds:.0f} s): "
                  f"{summary}", flush=True)
            if code != 0:
                return 1
        bad = 0
        for mutant in todo:
            original = _mutate(root, mutant)
            if original is None:
                bad += 1
                print(f"{mutant.name:18} stale: its text is not in {mutant.path} exactly once",
                      flush=True)
                continue
            try:
                code, summary, seconds = _pytest(root, [] if args.full else mutant.tests)
            finally:
                (root / mutant.path).write_text(original)
            caught = code != 0
            bad += not caught
            print(f"{mutant.name:18} {'caught' if caught else 'SURVIVED'} ({seconds:.0f} s): "
                  f"{summary}", flush=True)
        return 1 if bad else 0
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
