"""Rate chosen per request by the link: the choice rule on synthetic measurements, then a short run
of real packets of two shipped rates through the shaped link, with a bandwidth step."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from frankensplit.runtime.edge.rate_choice import Rate, RateChooser, Smoothed

FAST, SLOW = 1e-4, 3e-2  # ms per byte: 80 and 0.27 Mbit/s


def _rates(top1: bool = True) -> list[Rate]:
    spec = [("a", 1500, 26.0), ("b", 4900, 72.0), ("c", 8500, 74.0), ("d", 11600, 67.0)]
    return [Rate(m, Path(m), t if top1 else None, b) for m, b, t in spec]


def _observe(chooser: RateChooser, rate: Rate, ms_per_byte: float, server_ms: float = 50.0,
             edge_ms: float = 10.0) -> None:
    size = int(rate.bytes_per_image)
    upload = (size + chooser.http_bytes) * ms_per_byte
    chooser.observe(rate, size, edge_ms, chooser.base_ms + server_ms + upload, server_ms)


def test_smoothed_mean_and_spread():
    s = Smoothed(alpha=0.5)
    for _ in range(20):
        s.update(3.0)
    assert s.mean == 3.0 and s.std == 0.0 and s.last == 3.0
    s.update(5.0)
    assert 3.0 < s.mean < 5.0 and s.std > 0


def test_dominated_rates_are_dropped_and_ranked_by_recorded_top1():
    chooser = RateChooser(_rates(), deadline_ms=300)
    assert chooser.ranked_by == "recorded top-1"
    assert [r.model_id for r in chooser.candidates] == ["c", "b", "a"]  # d: more bytes, worse
    assert chooser.lowest.model_id == "a"
    by_bytes = RateChooser(_rates(top1=False), deadline_ms=300)
    assert by_bytes.ranked_by.startswith("bytes")
    assert [r.model_id for r in by_bytes.candidates] == ["d", "c", "b", "a"]


def test_lowest_rate_until_the_link_is_measured_then_the_best_that_fits():
    chooser = RateChooser(_rates(), deadline_ms=300)
    chooser.base_ms = 40.0
    first = chooser.choose()
    assert (first.rate.model_id, first.reason, first.predicted_ms) == ("a", "no estimate", {})
    for _ in range(3):
        _observe(chooser, first.rate, FAST)
    choice = chooser.choose()
    assert (choice.rate.model_id, choice.reason) == ("c", "fits")
    assert choice.estimate["uplink_mbit_per_s"] == pytest.approx(8e-3 / FAST, rel=1e-6)
    mean, high = choice.predicted_ms["c"]
    assert mean == pytest.approx(10 + 40 + 50 + (8500 + chooser.http_bytes) * FAST, rel=1e-3)
    assert high >= mean


def test_a_slower_link_is_believed_at_once_and_nothing_fitting_falls_back():
    chooser = RateChooser(_rates(), deadline_ms=300)
    for _ in range(5):
        _observe(chooser, chooser.candidates[0], FAST)
    assert chooser.choose().rate.model_id == "c"
    _observe(chooser, chooser.candidates[0], SLOW)  # one slow upload: c would take ~340 ms
    assert chooser.choose().rate.model_id in {"b", "a"}
    for _ in range(3):
        _observe(chooser, chooser.lowest, 10 * SLOW)
    choice = chooser.choose()
    assert (choice.rate.model_id, choice.reason) == ("a", "fallback")


def test_bad_rate_sets_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        RateChooser([], deadline_ms=100)
    with pytest.raises(ValueError, match="own model id"):
        RateChooser([_rates()[0], _rates()[0]], deadline_ms=100)
    with pytest.raises(ValueError, match="deadline"):
        RateChooser(_rates(), deadline_ms=0)


# -- a short run through the shaped link -------------------------------------------------------

torch = pytest.importorskip("torch")


def _two_rates():
    """The lowest-bytes and the most accurate trained model of the default's family (zoo)."""
    from frankensplit.models.zoo import MODELS, default_model_id
    from frankensplit.runtime.edge.export import recorded_figures

    base = MODELS.get(default_model_id())
    entries = [MODELS.get(m) for m in MODELS.names()]
    figures = {e.model_id: recorded_figures(e.metrics) for e in entries
               if e.trained and (e.architecture.teacher, e.architecture.encoder,
                                 e.architecture.decoder) == (base.architecture.teacher,
                                                             base.architecture.encoder,
                                                             base.architecture.decoder)}
    figures = {m: f for m, f in figures.items() if f}
    if len(figures) < 2:
        pytest.skip(f"needs two trained models with recorded figures in the zoo, got {figures}")
    low = min(figures, key=lambda m: figures[m]["bytes_per_image"])
    best = max(figures, key=lambda m: figures[m]["top1"])
    ratio = figures[best]["bytes_per_image"] / figures[low]["bytes_per_image"]
    if best == low or ratio < 3:
        pytest.skip(f"the zoo's rates are too close for this test ({low}, {best}: x{ratio:.1f})")
    return {m: figures[m] for m in (low, best)}


@pytest.fixture(scope="module")
def served_rates(tmp_path_factory):
    """Edge bundles of two shipped rates and a real server of both, on loopback."""
    from frankensplit.models.zoo import create_model
    from frankensplit.runtime.edge.export import export_bundle
    from frankensplit.runtime.server import create_app, run_in_thread
    from frankensplit.runtime.server.loading import served_model

    rates = _two_rates()
    tmp = tmp_path_factory.mktemp("rates")
    models = {m: create_model(m) for m in rates}
    bundles = {m: export_bundle(models[m], tmp / m, figures=f).edge_dir for m, f in rates.items()}
    app = create_app({m: served_model(model) for m, model in models.items()})
    with run_in_thread(app) as url:
        yield url, bundles, rates


def _fixtures() -> list[Path]:
    folder = Path(__file__).resolve().parents[2] / "shared/data/fixtures/tiny16"
    images = sorted(folder.glob("*.jpg"))
    if len(images) < 8:
        pytest.skip(f"fixture images not found in {folder}")
    return images


def _slowest_ms(bundle: Path, url: str, images: list[Path]) -> float:
    """The slowest of a few requests image -> answer with one fixed rate (no rate choice)."""
    import time

    from frankensplit.runtime.edge.client import EdgeClient, post_packet

    client = EdgeClient(bundle, threads=1)
    client.encode(images[0])  # first run of a session
    times = []
    for image in images:
        start = time.perf_counter()
        post_packet(url, client.encode(image))
        times.append((time.perf_counter() - start) * 1000)
    return max(times)


def test_rate_follows_a_bandwidth_step_through_the_shaper(served_rates):
    from frankensplit.runtime.edge.rate_choice import HTTP_BYTES, RateClient
    from frankensplit.runtime.edge.retry import NO_RETRY
    from frankensplit.sim.shaper import shaped_proxy

    url, bundles, rates = served_rates
    low, best = rates  # fewest bytes first
    images = _fixtures()
    port = int(url.rsplit(":", 1)[1])
    with shaped_proxy(("127.0.0.1", port), 20.0, 10.0) as fast_link:
        # the deadline: 2 s, or 4x what the best rate takes unshaped when the CPU is that busy
        deadline = max(2000.0, 4 * _slowest_ms(bundles[best], fast_link.url, images[:2]))
        # a slow link: the best rate's upload alone takes 1.5 deadlines there
        slow = (rates[best]["bytes_per_image"] + HTTP_BYTES) * 8 / (1.5 * deadline * 1e3)
        client = RateClient(list(bundles.values()), deadline, threads=1, warmup=images[0])
        with shaped_proxy(("127.0.0.1", port), slow, 10.0) as slow_link:
            client.probe(fast_link.url)
            fast = [client.classify(fast_link.url, im, retry=NO_RETRY) for im in images[:3]]
            slowed = [client.classify(slow_link.url, im, retry=NO_RETRY) for im in images[3:7]]
    assert fast[0]["rate"]["reason"] == "no estimate" and fast[0]["rate"]["model_id"] == low
    assert [a["rate"]["model_id"] for a in fast[1:]] == [best, best]
    assert all(a["rate"]["reason"] == "fits" and a["rate"]["within_deadline"] for a in fast[1:])
    # the first upload after the step is slow; from the next one on the lowest rate is sent
    assert [a["rate"]["model_id"] for a in slowed[1:]] == [low] * 3
    estimate = slowed[-1]["rate"]["estimate"]["uplink_mbit_per_s"]
    assert slow / 2 < estimate < slow * 1.5, (estimate, slow)
    assert all(a["rate"]["within_deadline"] for a in slowed[1:])
    assert json.dumps(slowed[-1]["rate"])  # plain data: goes into the client's JSON output
    assert math.isfinite(slowed[-1]["latency_ms"])


def test_cli_client_chooses_rates(served_rates, capsys):
    from frankensplit.cli import main as cli_main

    url, bundles, rates = served_rates
    images = [str(p) for p in _fixtures()[:2]]
    argv = ["client", *(a for b in bundles.values() for a in ("--bundle", str(b)))]
    assert cli_main([*argv, "--url", url, "--deadline-ms", "5000", "--json", *images]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and lines[0]["rate"]["model_id"] == next(iter(rates))  # the lowest
    assert {"uplink_mbit_per_s", "base_ms"} <= lines[-1]["rate"]["estimate"].keys()
    assert lines[-1]["answer"]["predictions"]
    assert cli_main([*argv, "--url", url, *images]) == 2
    assert "--deadline-ms" in capsys.readouterr().err
    assert cli_main([*argv, "--deadline-ms", "100", *images]) == 2
    assert "needs --url" in capsys.readouterr().err


def test_the_rate_choice_benchmark_runs_one_variable_rate_bundle_at_each_rate(default_bundle,
                                                                               monkeypatch):
    """``benchmarks/shaped_link.py --rate-choice`` on the zoo default: one bundle, and a fixed
    client per rate of it (``<id>@<lambda>``), each coding at its own rate."""
    import importlib.util
    import sys

    from frankensplit.bitstream import unpack
    from frankensplit.models.zoo import MODELS, default_model_id

    monkeypatch.setattr(sys, "path", [*sys.path])
    spec = importlib.util.spec_from_file_location(
        "shaped_link_rates", Path(__file__).resolve().parents[1] / "benchmarks/shaped_link_rates.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    entry = MODELS.get(default_model_id())
    if entry.architecture.rates is None:
        pytest.skip("the zoo default is a fixed-rate model")
    assert bench.family(None) == [entry.model_id]
    fixed = bench.fixed_clients({entry.model_id: default_bundle.edge_dir}, threads=1)
    assert list(fixed) == [f"{entry.model_id}@{v:g}" for v in entry.architecture.rates]
    assert [rate for _, rate in fixed.values()] == list(range(len(entry.architecture.rates)))
    image = _fixtures()[0]
    sizes = [len(client.encode(image, rate)) for client, rate in fixed.values()]
    assert [unpack(client.encode(image, rate)).rate for client, rate in fixed.values()] == \
        list(range(len(fixed)))
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), sizes  # rate 0: fewest
    assert bench._sent({"model_id": entry.model_id, "lambda": 2.0}) == f"{entry.model_id}@2"
    assert bench._sent({"model_id": "fs-lite0-l4", "lambda": None}) == "fs-lite0-l4"
