"""The shipped zoo keeps its figures: top-1, teacher agreement, NLL and real bytes on the fixtures.

Every trained entry of ``frankensplit/zoo/index.json`` with the default's teacher (FrankenSplit and
the Entropic Student baseline) is measured on the 16 labelled fixture photos through its real
coding path (packets -> server decode) and compared with the figures ``tools/fixture_figures.py``
recorded in the entry. No figure is typed here: a retrained zoo is tested by running the tool and
committing the index it writes, the way golden files are regenerated only on purpose.

Tolerances. ``tools/fixture_figures.py --noise`` found every figure identical at 1 and 2 threads
and at batch 1 and 16 on the 2-core CPU machine, and the ONNX edge's packets are byte-identical to
torch's (``tests/test_runtime_client.py``), so on one machine the figures are exact. Another CPU
may round a float differently and flip a latent symbol now and then: bytes may move by 0.2%, the
NLL by 1% (relative), top-1 and teacher agreement by at most one image of 16 (6.25 points).
"""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
from pathlib import Path

import pytest

from frankensplit.files import file_sha256
from frankensplit.models.zoo import MODELS, ZOO_DIR, ModelEntry, default_model_id
from frankensplit.sources import git_ref, source_sha256
from frankensplit.train.parents import command_parents

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("top1", "teacher_agreement", "nll", "bytes_per_image", "bpp_actual")
ONE_IMAGE = 100.0 / 16
TOLERANCE = {"top1": (0.0, ONE_IMAGE + 1e-9), "teacher_agreement": (0.0, ONE_IMAGE + 1e-9),
             "nll": (0.01, 0.0), "bytes_per_image": (0.002, 0.0), "bpp_actual": (0.002, 0.0)}
#: Issue 11's rule for the default: the most accurate FrankenSplit model at <= 1 bpp.
DEFAULT_MAX_BPP = 1.0


def _shipped() -> list[ModelEntry]:
    """Trained entries with the default's teacher, in index order (the default among them)."""
    default = MODELS.get(default_model_id())
    return [MODELS.get(m) for m in MODELS.names()
            if MODELS.get(m).trained
            and MODELS.get(m).architecture.teacher == default.architecture.teacher]


SHIPPED = _shipped()


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("fixture_figures", REPO / "tools/fixture_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _keys(entry: ModelEntry) -> list[str]:
    """The figures recorded for ``entry``: `FIGURES`, each once per rate (``top1@<lambda>``) for a
    variable-rate model (``tools/fixture_figures.py``)."""
    rates = entry.architecture.rates
    return list(FIGURES) if rates is None else [f"{k}@{v:g}" for v in rates for k in FIGURES]


def _recorded(entry: ModelEntry) -> dict[str, float]:
    missing = [k for k in _keys(entry) if f"fixture16_{k}" not in entry.metrics]
    assert not missing, (f"{entry.model_id} has no fixture16_{missing} in index.json: run "
                         "`python tools/fixture_figures.py` and commit the index")
    return {k: entry.metrics[f"fixture16_{k}"] for k in _keys(entry)}


def test_the_default_is_a_shipped_model_and_every_one_has_figures_of_its_weights():
    if not any(MODELS.get(m).trained for m in MODELS.names()):
        pytest.skip("no trained model in the zoo index")
    assert default_model_id() in {e.model_id for e in SHIPPED}, "the default has no weights"
    for entry in SHIPPED:
        _recorded(entry)
        assert entry.metrics.get("fixture16_sha256") == entry.sha256 == file_sha256(
            ZOO_DIR / entry.weights), (f"{entry.model_id}: figures of other weights; run "
                                       "`python tools/fixture_figures.py`")


@pytest.mark.parametrize("entry", SHIPPED, ids=lambda e: e.model_id)
def test_shipped_model_keeps_its_fixture_figures(entry, tool, tiny16):
    from frankensplit.models.zoo import create_model

    measured = tool.measure(create_model(entry.model_id), tiny16)
    recorded = _recorded(entry)
    assert measured.keys() == recorded.keys(), f"{entry.model_id}: {sorted(measured)}"
    for name, value in recorded.items():
        rel, abs_ = TOLERANCE[name.split("@")[0]]
        assert math.isclose(measured[name], value, rel_tol=rel, abs_tol=abs_), (
            f"{entry.model_id} {name}: measured {measured[name]}, recorded {value}")


def _families() -> dict[tuple[str, str, str], list[ModelEntry]]:
    """Shipped fixed-rate entries grouped by architecture (teacher, encoder, decoder), by lambda."""
    groups: dict[tuple[str, str, str], list[ModelEntry]] = {}
    for entry in SHIPPED:
        arch = entry.architecture
        if arch.rates is None:
            groups.setdefault((arch.teacher, arch.encoder, arch.decoder), []).append(entry)
    return {k: sorted(v, key=lambda e: e.lmbda) for k, v in groups.items()}


def _dev(entry: ModelEntry, at: str = "") -> tuple[float, float] | None:
    """(top-1 %, bpp) on the dev set as recorded by ``benchmarks/results.py``, if recorded
    (``at``: ``@<lambda>``, one rate of a variable-rate model)."""
    n = next((m.group(1) for k in entry.metrics
              if (m := re.fullmatch(rf"dev(\d+)_top1{re.escape(at)}", k))), None)
    if n is None or f"dev{n}_bpp_actual{at}" not in entry.metrics:
        return None
    return entry.metrics[f"dev{n}_top1{at}"], entry.metrics[f"dev{n}_bpp_actual{at}"]


def test_bytes_fall_as_lambda_rises():
    """Within one architecture a larger rate weight must code smaller packets: on the fixtures
    (the recorded figures, which the test above holds the models to) and on the dev set; so
    must a variable-rate model from one rate to the next."""
    for family, entries in _families().items():
        if len(entries) < 2:
            continue
        lmbdas = [e.lmbda for e in entries]
        assert len(set(lmbdas)) == len(lmbdas), f"{family}: two models with one lambda {lmbdas}"
        fixture = [_recorded(e)["bytes_per_image"] for e in entries]
        assert fixture == sorted(fixture, reverse=True) and len(set(fixture)) == len(fixture), (
            f"{family}: fixture bytes {fixture} at lambdas {lmbdas}")
        dev = [d[1] for e in entries if (d := _dev(e))]
        assert dev == sorted(dev, reverse=True), f"{family}: dev bpp {dev} at lambdas {lmbdas}"
    for entry in (e for e in SHIPPED if e.architecture.rates is not None):
        ats = [f"@{v:g}" for v in entry.architecture.rates]  # largest lambda first
        fixture = [_recorded(entry)[f"bytes_per_image{at}"] for at in ats]
        assert fixture == sorted(fixture) and len(set(fixture)) == len(fixture), (
            f"{entry.model_id}: fixture bytes {fixture} at rates {ats}")
        dev = [d[1] for at in ats if (d := _dev(entry, at))]
        assert dev == sorted(dev), f"{entry.model_id}: dev bpp {dev} at rates {ats}"


def _points(entry: ModelEntry) -> dict[int | None, tuple[float, float] | None]:
    """An entry's (top-1 %, bpp) on the dev set by rate index (None for a fixed-rate model), or
    None where the dev set has no figure."""
    rates = entry.architecture.rates
    if rates is None:
        return {None: _dev(entry)}
    return {i: _dev(entry, f"@{v:g}") for i, v in enumerate(rates)}


def _fixture_points(entry: ModelEntry) -> dict[int | None, tuple[float, float]]:
    rates, recorded = entry.architecture.rates, _recorded(entry)
    if rates is None:
        return {None: (recorded["top1"], recorded["bpp_actual"])}
    return {i: (recorded[f"top1@{v:g}"], recorded[f"bpp_actual@{v:g}"])
            for i, v in enumerate(rates)}


def test_the_default_is_the_most_accurate_frankensplit_model_at_most_1_bpp():
    """The default is what ``frankensplit demo``, ``serve`` and ``client`` use when no model is
    named, so shipping a weaker one is a regression every user sees. The rule is the one the
    project set (issue 11): among the shipped FrankenSplit models of the default's teacher, the
    highest top-1 at <= 1 bpp, by the dev-set figures ``benchmarks/results.py`` recorded (1,286
    images; the fixtures' 16 decide only when a candidate has no dev figures). A variable-rate
    model competes with each of its rates, and when it is the default, its ``default_rate`` is
    the rate that must win. Equal top-1 is allowed, so either of two equally good models (or
    rates) may be the default."""
    if not SHIPPED:
        pytest.skip("no trained model in the zoo index")
    default = MODELS.get(default_model_id())
    assert default.architecture.method == "frankensplit", f"the default {default.model_id} is a baseline"
    candidates = [e for e in SHIPPED if e.architecture.method == "frankensplit"]
    dev = {(e.model_id, i): p for e in candidates for i, p in _points(e).items()}
    if all(dev.values()):
        figures, where = dev, "dev set"
    else:
        figures = {(e.model_id, i): p for e in candidates for i, p in _fixture_points(e).items()}
        where = "fixtures"
    ours = (default.model_id, default.default_rate)
    assert ours in figures, f"the default rate of {default.model_id} is {default.default_rate}"
    within = {k: top1 for k, (top1, bpp) in figures.items() if bpp <= DEFAULT_MAX_BPP}
    assert ours in within, (f"the default {ours} codes {figures[ours][1]} bpp on the {where}, "
                            f"over {DEFAULT_MAX_BPP}")
    best = max(within.values())
    assert within[ours] >= best, (
        f"the default {ours} has {within[ours]}% top-1 on the {where}; "
        f"{[k for k, t in within.items() if t == best]} reach {best}% at <= {DEFAULT_MAX_BPP} bpp")


def _git_has(ref: str) -> bool:
    r = subprocess.run(["git", "cat-file", "-e", ref], cwd=REPO, capture_output=True, check=False)
    return r.returncode == 0


def _no_history() -> str | None:
    """Why this checkout may lack an older commit (not a git clone, or a shallow one), or None."""
    try:
        r = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=REPO,
                           capture_output=True, text=True, check=False)
    except OSError:
        return "git is not installed"
    if r.returncode != 0:
        return "the checkout is not a git clone"
    return "the clone is shallow" if r.stdout.strip() == "true" else None


@pytest.mark.parametrize("entry", [MODELS.get(m) for m in MODELS.names()
                          if MODELS.get(m).trained and MODELS.get(m).config],
                         ids=lambda e: e.model_id)
def test_the_index_command_loads_and_starts_from_the_recorded_parents(entry):
    """``config`` in index.json is how a user retrains a shipped model: the config file and its
    ``--set`` overrides must load, and each file it starts from (``init_codec``, ``init_g_s``: in
    the work tree, or ``git:<commit>:<path>`` for parents the zoo has replaced since) must be
    exactly the one it was trained from: the bytes' sha256 equals the entry's ``parent_sha256``.
    A parent named by its plain path and replaced later fails here, as does an unrecorded one.
    Git parents are skipped only where this checkout has no history (no clone, or a shallow one)."""
    parents = command_parents(entry.config, REPO)
    assert set(entry.parent_sha256) == set(parents), (
        f"{entry.model_id}: parent_sha256 has {sorted(entry.parent_sha256)}, its command starts "
        f"from {parents}")
    unavailable = []
    for key, source in parents.items():
        ref = git_ref(source)
        if ref is not None and not _git_has(f"{ref[0]}^{{commit}}"):
            why = _no_history()
            assert why, f"{entry.model_id}: {key}={source}: this full clone has no commit {ref[0]}"
            unavailable.append(f"{source} ({why})")
            continue
        assert source_sha256(source, REPO) == entry.parent_sha256[key], (
            f"{entry.model_id}: {key}={source} is not the file it was trained from; name that "
            "version git:<commit>:<path> in the command")
    if unavailable:
        pytest.skip(f"cannot read {', '.join(unavailable)}")


TRAINED = [MODELS.get(m) for m in MODELS.names() if MODELS.get(m).trained]


@pytest.mark.parametrize("entry", TRAINED, ids=lambda e: e.model_id)
def test_train_steps_total_counts_the_lineage(entry):
    """``train_steps_total`` is the steps in the shipped weights over the model's whole lineage:
    this run's steps up to the shipped checkpoint (``train_steps_to_checkpoint`` where that came
    before the run's end, else ``train_steps_this_run``) plus what its parents had. Where the
    ``init_codec`` parent is a version the index still holds (same sha256), the total is that
    parent's total plus this run's steps; a reuse decoder (``init_g_s``) adds its own earlier
    training on top. A parent the zoo has replaced since is not checked here (docs/training.md)."""
    metrics = entry.metrics
    total, run = metrics.get("train_steps_total"), metrics.get("train_steps_this_run")
    here = metrics.get("train_steps_to_checkpoint", run)
    assert all(type(v) is int for v in (total, run, here)), (
        f"{entry.model_id}: train_steps_total {total!r}, train_steps_this_run {run!r}, "
        f"train_steps_to_checkpoint {here!r}: integers expected")
    assert 0 < here <= run and here <= total, (
        f"{entry.model_id}: {total} steps in all, {run} this run, {here} of them in the weights")
    parent = next((p for p in TRAINED if p.sha256 == entry.parent_sha256.get("init_codec")), None)
    if parent is None:
        return
    expected = parent.metrics["train_steps_total"] + here
    if "init_g_s" in entry.parent_sha256:
        assert total >= expected, f"{entry.model_id}: {total} < {parent.model_id}'s + {here}"
    else:
        assert total == expected, (
            f"{entry.model_id}: {total} steps, {parent.model_id} had "
            f"{parent.metrics['train_steps_total']} and this run {here}")
