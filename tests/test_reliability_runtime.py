"""Reliability of the deployed runtime: load shedding, retries, request ids, crashes, bad weights.

Everything here runs against a real server on loopback (uvicorn in a thread, or a real
``frankensplit serve`` process for the crash test) with real packets of real photos; nothing is
mocked. Short versions of ``benchmarks/load.py`` and ``benchmarks/faults.py`` are included, so
the guarantees those benchmarks measure at scale are also checked on every test run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from benchmarks.harness.loadgen import answer_matches, percentile, run_load
from benchmarks.harness.serve_process import ServeProcess, free_port
from frankensplit import bitstream
from frankensplit.commands.serve import check_weights
from frankensplit.data import bundled_photos, load_image, make_transform
from frankensplit.files import file_sha256
from frankensplit.models.architecture import Architecture
from frankensplit.models.codec_file import load_codec
from frankensplit.models.zoo import MODELS, ZOO_DIR, default_model_id
from frankensplit.protocol import REQUEST_ID_HEADER
from frankensplit.runtime.edge.bundle import read_manifest, write_manifest
from frankensplit.runtime.edge.client import RetryPolicy, ServerError, post_packet
from frankensplit.runtime.edge.export import export_server
from frankensplit.runtime.edge.retry import NO_RETRY, is_retryable, parse_retry_after
from frankensplit.runtime.server import ServerConfig, create_app, run_in_thread
from frankensplit.runtime.server.batching import Batcher, QueueFullError
from frankensplit.runtime.server.loading import load_server_model, served_model

REPO = Path(__file__).resolve().parents[1]
MODEL_ID = default_model_id()  # conftest's default_model (trained); the crash test serves it too
FAST_RETRY = RetryPolicy(retries=100, base_delay_s=0.05, max_delay_s=0.5, deadline_s=120.0)


@pytest.fixture(scope="module")
def packets(default_model) -> list[bytes]:
    """Edge encodings of the photos shipped with scikit-image/matplotlib (always installed)."""
    photos = bundled_photos()[:4]
    assert len(photos) >= 2, "scikit-image's sample photos are missing"
    transform = make_transform(default_model.data_config)
    with torch.no_grad():
        return default_model.edge.encode(torch.stack([transform(load_image(p)) for p in photos]))


@pytest.fixture(scope="module")
def expected(default_model, packets) -> list[list[float]]:
    """The correct answer per packet, decoded in this process: every class's probability."""
    with torch.no_grad():
        return default_model.server.decode(packets).softmax(1).tolist()


def _correct(answer: dict, reference: list[float]) -> bool:
    predictions = [(p["index"], p["probability"]) for p in answer["predictions"]]
    return answer_matches(predictions, reference, len(predictions))


def test_the_packets_are_answered_differently(expected):
    """The premise of the answer checks below: each packet's answer is not another's (the
    untrained model these tests once served answered one class for every photo)."""
    assert len({max(range(len(p)), key=p.__getitem__) for p in expected}) >= len(expected) // 2
    for i, p in enumerate(expected):
        for j in range(i):
            assert not answer_matches(sorted(enumerate(p), key=lambda c: -c[1])[:5],
                                      expected[j], 5), (i, j)


@pytest.fixture(scope="module", autouse=True)
def crash_server(request, tmp_path_factory):
    """The real ``frankensplit serve`` process the crash test kills, started with the module.

    Started (not awaited) before the first test, so its start-up (imports, model, decoder
    worker: about 10 s on a busy 2-core machine) overlaps the in-process tests; not started
    when the crash test is deselected.
    """
    if not any(item.name.startswith("test_sigkill") for item in request.session.items):
        yield None
        return
    log = tmp_path_factory.mktemp("crash") / "server.log"
    with ServeProcess(["--model", MODEL_ID, "--log-level", "warning"], log=log) as server:
        yield server


def _serve(model, **config):
    """A real uvicorn server on loopback with ``model`` and the given `ServerConfig` fields."""
    config.setdefault("isolate_decoder", False)  # the sandbox is tested where it matters
    app = create_app({model.model_id: served_model(model)}, ServerConfig(**config))
    return app, run_in_thread(app)


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _burst(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    def post(i: int) -> httpx.Response:
        return httpx.post(f"{url}/v1/classify", content=bodies[i], timeout=60,
                          headers={REQUEST_ID_HEADER: f"burst-{i}"})

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, range(len(bodies))))


@pytest.mark.parametrize("limit", ["max_queue", "max_in_flight"])
def test_saturation_is_shed_with_503_and_retry_after(default_model, packets, limit):
    app, server = _serve(default_model, max_batch=1, retry_after_s=1, **{limit: 1})
    with server as url:
        _wait_ready(url)
        responses = _burst(url, [packets[i % len(packets)] for i in range(10)])
        assert app.state.service.in_flight == 0  # no admission slot leaked
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses, statuses
    for i, response in enumerate(responses):
        assert response.headers[REQUEST_ID_HEADER] == f"burst-{i}"
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "1"
            assert limit in response.json()["detail"]


def test_clients_retry_through_shedding_and_all_get_their_answer(default_model, packets, expected):
    _, server = _serve(default_model, max_batch=1, max_queue=1, retry_after_s=1)
    waits: list[tuple[str, float]] = []
    count = 8
    with server as url:
        _wait_ready(url)

        def classify(i: int) -> dict:
            return post_packet(url, packets[i % len(packets)], topk=5, retry=FAST_RETRY,
                               request_id=f"r-{i}",
                               on_retry=lambda _n, e, wait: waits.append((str(e), wait)))

        with ThreadPoolExecutor(count) as pool:
            answers = list(pool.map(classify, range(count)))
    for i, answer in enumerate(answers):
        assert _correct(answer, expected[i % len(packets)]), (i, answer["predictions"])
        assert answer["request_id"] == f"r-{i}"
    shed = [wait for error, wait in waits if "server answered 503" in error]
    assert shed and min(shed) >= 1.0  # shed, and Retry-After honoured as a floor
    assert max(answer["attempts"] for answer in answers) > 1


def test_a_full_queue_serves_retried_requests_first():
    """Shed requests come back with a higher ``X-Attempt`` and outrank first attempts."""
    order: list[str] = []

    async def scenario() -> list[str]:
        release = asyncio.Event()

        async def run_batch(items: list[str]) -> list[str]:
            order.extend(items)
            if items == ["busy"]:
                await release.wait()  # keeps the model busy while the queue fills
            return items

        batcher = Batcher(run_batch, max_batch=1, max_queue=2)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit("busy"))
        await asyncio.sleep(0.01)
        first = asyncio.ensure_future(batcher.submit("first", priority=1))
        newer = asyncio.ensure_future(batcher.submit("newer", priority=1))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError, match="max_queue 2"):
            await batcher.submit("tie", priority=1)  # equal rank: the newcomer is refused
        retried = asyncio.ensure_future(batcher.submit("retried", priority=3))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError, match="displaced"):
            await newer  # the newest of the lowest rank made room
        release.set()
        results = await asyncio.gather(busy, first, retried)
        await batcher.close()
        return results

    assert asyncio.run(scenario()) == ["busy", "first", "retried"]
    assert order == ["busy", "retried", "first"]  # higher attempt first, then arrival order


def test_requests_past_their_timeout_are_answered_504_not_left_hanging(default_model, packets):
    app, server = _serve(default_model, max_batch=1, request_timeout_s=0.05)

    def classify(_: int) -> dict | ServerError:
        try:
            return post_packet(url, packets[0], retry=NO_RETRY)
        except ServerError as e:
            return e

    with server as url:
        _wait_ready(url)
        start = time.monotonic()
        with ThreadPoolExecutor(6) as pool:  # one at a time: the last waits 5 decodings
            results = list(pool.map(classify, range(6)))
        assert time.monotonic() - start < 30
        assert app.state.service.in_flight == 0  # timed-out requests free their slot
        assert httpx.get(f"{url}/healthz").status_code == 200
    errors = [r for r in results if isinstance(r, ServerError)]
    assert errors and all(e.status == 504 and e.attempts == 1 for e in errors), results
    assert "request_timeout_s=0.05" in errors[0].detail


def test_request_ids_are_echoed_and_checked(default_model, packets):
    _, server = _serve(default_model)
    with server as url:
        _wait_ready(url)

        def post(body: bytes, request_id: str | None) -> httpx.Response:
            headers = {} if request_id is None else {REQUEST_ID_HEADER: request_id}
            return httpx.post(f"{url}/v1/classify", content=body, headers=headers, timeout=60)

        ok = post(packets[0], "edge-7:42")
        assert ok.status_code == 200 and ok.headers[REQUEST_ID_HEADER] == "edge-7:42"
        bad = post(b"not a packet", "edge-7:43")
        assert bad.status_code == 400 and bad.headers[REQUEST_ID_HEADER] == "edge-7:43"
        for invalid in ("x" * 129, "has space"):
            response = post(packets[0], invalid)
            assert response.status_code == 400 and REQUEST_ID_HEADER not in response.headers
            assert REQUEST_ID_HEADER in response.json()["detail"]
        assert REQUEST_ID_HEADER not in post(packets[0], None).headers
        answer = post_packet(url, packets[0])
        assert len(answer["request_id"]) == 32 and answer["attempts"] == 1  # generated: uuid4


def test_client_errors_are_never_retried(default_model, packets):
    _, server = _serve(default_model)
    retried: list[BaseException] = []
    with server as url:
        _wait_ready(url)
        packet = bitstream.unpack(packets[0])
        unknown = bitstream.pack(bitstream.Packet("no-such-model", packet.shape, packet.payload))
        for body, status in ((b"not a packet", 400), (unknown, 404)):
            with pytest.raises(ServerError) as caught:
                post_packet(url, body, retry=FAST_RETRY, request_id="bad-1",
                            on_retry=lambda _n, e, _w: retried.append(e))
            assert caught.value.status == status and caught.value.attempts == 1
            assert "request bad-1" in str(caught.value)
    assert retried == []


def test_connection_failures_are_retried_within_the_deadline():
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    causes: list[str] = []
    policy = RetryPolicy(retries=3, base_delay_s=0.01, max_delay_s=0.05)
    with pytest.raises(ConnectionError, match="after 4 attempt") as caught:
        post_packet(url, b"x", retry=policy, on_retry=lambda _n, e, _w: causes.append(repr(e)))
    assert len(causes) == 3 and all("Connection refused" in c for c in causes)
    assert "request " in str(caught.value)
    start = time.monotonic()
    with pytest.raises(ConnectionError):
        post_packet(url, b"x", retry=RetryPolicy(retries=1000, base_delay_s=0.05,
                                                  max_delay_s=0.1, deadline_s=0.5))
    assert time.monotonic() - start < 2.0


def test_retry_policy_backs_off_exponentially_with_jitter_and_honours_retry_after():
    import random

    policy = RetryPolicy(retries=10, base_delay_s=0.1, max_delay_s=1.0)
    rng = random.Random(0)
    for retry, cap in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)):
        delays = [policy.delay(retry, rng=rng) for _ in range(200)]
        assert cap / 2 <= min(delays) and max(delays) <= cap and len(set(delays)) > 100
    assert all(3.0 <= policy.delay(1, retry_after=3.0, rng=rng) <= 3.1 for _ in range(50))
    assert parse_retry_after("7") == 7.0 and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert not is_retryable(ServerError(400, "bad")) and is_retryable(ServerError(503, "busy"))
    assert is_retryable(ServerError(429, "slow down")) and not is_retryable(ServerError(500, "x"))
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy(retries=-1)
    with pytest.raises(ValueError, match="base_delay_s"):
        RetryPolicy(base_delay_s=2.0, max_delay_s=1.0)
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0 and percentile([], 0.5) is None


def test_short_load_run_answers_every_request_correctly(default_model, packets, expected):
    """``benchmarks/load.py`` in small: 8 clients for 3 s through the sandboxed decoder; each
    answer's top-5 classes and probabilities are those of its own packet (batches of up to 8)."""
    _, server = _serve(default_model, isolate_decoder=True, max_queue=2)
    with server as url:
        _wait_ready(url)
        report = run_load(url, packets, expected, clients=8, duration_s=3.0, retry=FAST_RETRY)
    summary = report.summary()
    assert summary["requests"] >= 8 and summary["successes"] == summary["requests"], summary
    assert summary["failures"] == summary["lost"] == summary["wrong_answers"] == 0
    assert summary["unechoed"] == summary["duplicate_ids"] == 0
    assert summary["latency_ms"]["p50"] > 0 and summary["throughput_rps"] > 0


def _processes() -> dict[int, tuple[str, int]]:
    """Running processes (Linux ``/proc``): pid -> (state, parent pid); zombies count as gone."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue  # exited while we looked
        if state != "Z":
            found[int(stat.parent.name)] = (state, int(parent))
    return found


def test_sigkill_and_restart_loses_no_request(crash_server, packets, expected):
    """``benchmarks/faults.py`` in small: a real server process dies mid-load and comes back."""
    server = crash_server
    server.wait_ready(timeout=300)
    retry = RetryPolicy(retries=1000, base_delay_s=0.05, max_delay_s=0.5, deadline_s=300.0)
    reports = []
    load = threading.Thread(target=lambda: reports.append(
        run_load(server.url, packets, expected, clients=4, duration_s=2.0, retry=retry)))
    load.start()
    time.sleep(1.0)
    first_pid = server.pid
    workers = [pid for pid, (_, parent) in _processes().items() if parent == first_pid]
    server.restart()  # SIGKILL mid-request, then a new process on the same port
    load.join(timeout=400)
    assert not load.is_alive() and server.pid != first_pid
    summary = reports[0].summary()
    assert summary["requests"] >= 4, summary
    assert summary["successes"] == summary["requests"], summary  # each: one correct answer
    assert summary["lost"] == summary["wrong_answers"] == summary["unechoed"] == 0
    assert summary["duplicate_ids"] == 0 and summary["requests_retried"] >= 1
    causes = set(summary["retries_by_cause"])
    assert causes & {"ConnectionRefusedError", "ConnectionResetError", "RemoteDisconnected",
                     "IncompleteRead", "BadStatusLine", "503"}, causes
    assert workers and not set(workers) & set(_processes())  # the old decoder is gone


def _corrupt(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "header-flip":
        return data[:10] + bytes([data[10] ^ 0xFF]) + data[11:]
    return data[:-100] + bytes([data[-100] ^ 0x01]) + data[-99:]  # one bit of tensor data


@pytest.mark.parametrize("how", ["truncated", "header-flip", "data-flip"])
def test_corrupted_zoo_weights_fail_at_load_with_a_clear_error(default_model, tmp_path, how):
    trained = [MODELS.get(name) for name in MODELS.names() if MODELS.get(name).trained]
    if not trained:
        pytest.skip("no trained model in the zoo index")
    entry = trained[0]
    weights = ZOO_DIR / entry.weights
    assert file_sha256(weights) == entry.sha256  # the shipped file is the one indexed
    bad = tmp_path / "codec.safetensors"
    bad.write_bytes(_corrupt(weights.read_bytes(), how))
    teacher = default_model.teacher  # never the shared model:
    model = Architecture(teacher.name).build(entry.model_id, backbone=teacher)
    with pytest.raises(ValueError, match=re.escape(f"checksum mismatch for {bad}")):
        load_codec(model, bad, sha256=entry.sha256)
    if how != "data-flip":  # without a checksum only the safetensors framing can tell
        with pytest.raises(ValueError, match=re.escape(f"cannot read codec weights {bad}")):
            load_codec(model, bad)


@pytest.fixture(scope="module")
def server_bundle(default_model, tmp_path_factory) -> Path:
    """The server half of ``frankensplit export`` (no ONNX export: only this half is needed)."""
    folder = tmp_path_factory.mktemp("bundle") / "server"
    export_server(default_model, folder)
    return folder


@pytest.fixture
def bad_bundles(server_bundle, tmp_path) -> dict[str, Path]:
    """Server bundles whose codec file is truncated: as is, and with a manifest that agrees."""
    bundles = {}
    for name in ("checksum", "framing"):
        folder = tmp_path / name
        shutil.copytree(server_bundle, folder)
        codec = folder / "codec.safetensors"
        codec.write_bytes(_corrupt(codec.read_bytes(), "truncated"))
        if name == "framing":  # a manifest written after the damage: only parsing catches it
            manifest = read_manifest(folder, verify=False)
            files = {**manifest.files, "codec.safetensors": file_sha256(codec)}
            write_manifest(folder, dataclasses.replace(manifest, files=files))
        bundles[name] = folder
    return bundles


def test_corrupted_server_bundles_fail_at_load(bad_bundles):
    for name, message in (("checksum", "checksum mismatch"), ("framing", "cannot read")):
        spec = str(bad_bundles[name])
        with pytest.raises(ValueError, match=message):
            load_server_model(spec, teacher_weights=None)
        with pytest.raises(ValueError, match=message):
            check_weights(spec)


def test_serve_exits_with_one_clear_line_on_a_corrupted_model(bad_bundles):
    for name, message in (("checksum", "checksum mismatch"), ("framing", "cannot read weights")):
        out = subprocess.run(
            [sys.executable, "-m", "frankensplit", "serve", "--model", str(bad_bundles[name]),
             "--port", str(free_port())],
            check=False, capture_output=True, text=True, timeout=120, cwd=REPO,
        )
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2, out.stderr
        assert len(lines) == 1 and lines[0].startswith("frankensplit serve: error:"), lines
        assert message in lines[0] and "Traceback" not in out.stderr + out.stdout
