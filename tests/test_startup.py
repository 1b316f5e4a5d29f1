"""Start-up: ``frankensplit --help``, every sub-command's parser and ``models`` import no torch.

An edge install has onnxruntime and numpy, not torch; and torch + compressai + timm cost seconds
per start (compressai alone pulls torch_geometric and scipy.stats). Each runs in a fresh
interpreter, since this one has long imported torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from frankensplit.cli import COMMANDS
from frankensplit.models.zoo import list_models

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "compressai", "timm")

#: Installed before ``frankensplit`` is imported: importing a heavy package fails as if it were
#: not installed.
BLOCKER = f"""
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          check=False, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_help_and_every_parser_import_nothing_heavy():
    """The full parser (what ``--help`` prints), each command's own parser and its ``--help``."""
    code = f"""
import contextlib, io, json, sys
from frankensplit.cli import COMMANDS, build_parser, main
build_parser()
exits = {{}}
for argv in [["--help"], *([name, "--help"] for name in COMMANDS)]:
    build_parser(argv[0])
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as e:
            exits[argv[0]] = e.code
print(json.dumps({{"exits": exits, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""
    out = _python(code)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["heavy"] == [], f"imported at start-up: {result['heavy']}"
    assert result["exits"] == {name: 0 for name in ["--help", *COMMANDS]}


def test_help_and_models_run_where_torch_cannot_be_imported():
    """A torch-free install: ``--help`` and every ``COMMAND --help`` exit 0, ``models`` lists the
    same ids as the zoo (the torch-free index agrees with the registry that builds models)."""
    code = BLOCKER + """
import contextlib, io, json
from frankensplit.cli import COMMANDS, main
codes = {}
for argv in [["--help"], *([name, "--help"] for name in COMMANDS)]:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            codes[argv[0]] = main(argv)
        except SystemExit as e:
            codes[argv[0]] = e.code
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    codes["models"] = main(["models", "--json"])
ids = [json.loads(line)["model_id"] for line in buf.getvalue().splitlines()]
print(json.dumps({"codes": codes, "ids": ids}))
"""
    out = _python(code)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["codes"] == {name: 0 for name in ["--help", *COMMANDS, "models"]}, out.stderr
    assert sorted(result["ids"]) == list_models()


def test_simulate_runs_where_torch_cannot_be_imported():
    """``simulate`` prices a profile and byte counts: its whole run imports no torch."""
    code = BLOCKER + """
import importlib
importlib.import_module("frankensplit.commands.simulate")
importlib.import_module("frankensplit.eval.records")  # what commands.simulate.run imports
for name in ("latency", "links", "matching", "profile", "report", "simulate"):
    importlib.import_module(f"frankensplit.sim.{name}")
print("ok")
"""
    out = _python(code)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_blocker_blocks():
    """The blocker of the test above really makes torch unimportable (else it proves nothing)."""
    out = _python(BLOCKER + "import torch")
    assert out.returncode != 0 and "No module named 'torch' (blocked)" in out.stderr
