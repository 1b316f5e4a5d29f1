"""Slow clients cannot stall the server: stalled uploads, slowloris heads, the connection cap.

``benchmarks/slow_clients.py`` in small, against real servers on loopback (uvicorn in a thread
with the production protocol, and one real ``frankensplit serve`` process for the flags), with
real packets of real photos. Timing asserts have generous margins: the machine running the tests
may be busy, and what is checked is that nothing waits without bound, not how fast.
"""

from __future__ import annotations

import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from benchmarks.harness.serve_process import ServeProcess
from benchmarks.harness.stalled import (
    StalledConnections,
    header_prefix,
    server_connections,
    upload_prefix,
)
from frankensplit.data import bundled_photos, load_image, make_transform
from frankensplit.runtime.edge.client import post_packet
from frankensplit.runtime.edge.retry import NO_RETRY
from frankensplit.runtime.server import ServerConfig, create_app, run_in_thread
from frankensplit.runtime.server.connections import ConnectionLimits
from frankensplit.runtime.server.loading import served_model

MODEL_ID = "fs-lite0-untrained"  # conftest's lite0_model
SLACK_S = 10.0  # how late past its deadline a busy machine may close a connection


@pytest.fixture(scope="module")
def packets(lite0_model) -> list[bytes]:
    """Edge encodings of two photos shipped with scikit-image (always installed)."""
    transform = make_transform(lite0_model.data_config)
    photos = bundled_photos()[:2]
    with torch.no_grad():
        return lite0_model.edge.encode(torch.stack([transform(load_image(p)) for p in photos]))


def _serve(model, limits: ConnectionLimits | None = None, **config):
    config.setdefault("isolate_decoder", False)
    app = create_app({model.model_id: served_model(model)}, ServerConfig(**config))
    return app, run_in_thread(app, limits=limits)


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 120
    while httpx.get(f"{url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "server not ready"
        time.sleep(0.05)


def _metric(url: str, name: str) -> float:
    """One sample of ``/metrics`` (0 when absent: a counter never incremented)."""
    text = httpx.get(f"{url}/metrics").text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, flags=re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_stalled_uploads_hold_no_slot_and_are_answered_408(lite0_model, packets):
    """40 stalled uploads, more than ``max_in_flight``: good requests beside them still get 200."""
    body_timeout = 4.0
    app, server = _serve(lite0_model, max_in_flight=16, body_timeout_s=body_timeout)
    with server as url:
        _wait_ready(url)
        host = url.removeprefix("http://")
        with StalledConnections(url, 40, upload_prefix(host, 100_000, 10)) as stalled:
            open_at_answer = []

            def good(i: int) -> int:
                answer = post_packet(url, packets[i % 2], topk=1, retry=NO_RETRY, timeout=60)
                open_at_answer.append(stalled.open_count)
                return int(answer["predictions"][0]["index"])

            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(good, range(8)))  # a 503 or 504 would raise here
            assert len(answers) == 8 and max(open_at_answer) == 40  # answered beside them
            assert stalled.wait_closed(body_timeout + SLACK_S)
            summary = stalled.summary()
        assert summary["answers"] == {"408": 40} and summary["closed_by"] == {"eof": 40}
        after = summary["closed_after_s"]
        assert body_timeout - 0.1 <= after["min"] and after["max"] <= body_timeout + SLACK_S
        assert app.state.service.in_flight == 0
        assert _metric(url, 'frankensplit_requests_total{model="-",status="408"}') == 40
        deadline = time.monotonic() + SLACK_S  # the server's ends are gone too
        while server_connections(_port(url))["established"]:
            assert time.monotonic() < deadline, server_connections(_port(url))
            time.sleep(0.1)


def test_a_408_closes_the_connection_and_names_the_limit(lite0_model):
    _, server = _serve(lite0_model, body_timeout_s=0.5)
    with server as url:
        _wait_ready(url)
        host = url.removeprefix("http://")
        with socket.create_connection(("127.0.0.1", _port(url)), timeout=30) as sock:
            sock.sendall(upload_prefix(host, 1000, 10))
            answer = b""
            while chunk := sock.recv(65536):  # ends at EOF: the server closed it
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
    assert b"body_timeout_s=0.5" in body


def test_a_client_that_hangs_up_mid_body_frees_everything(lite0_model, packets):
    app, server = _serve(lite0_model, body_timeout_s=30.0)
    with server as url:
        _wait_ready(url)
        host = url.removeprefix("http://")
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", _port(url)), timeout=30) as sock:
                sock.sendall(upload_prefix(host, 100_000, 500))
                time.sleep(0.2)
        deadline = time.monotonic() + SLACK_S
        while _metric(url, 'frankensplit_requests_total{model="-",status="499"}') < 5:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert app.state.service.in_flight == 0
        assert post_packet(url, packets[0], retry=NO_RETRY)["predictions"]


def test_slow_heads_and_silent_connections_are_closed_after_the_header_timeout(lite0_model):
    limits = ConnectionLimits(header_timeout_s=1.5)
    _, server = _serve(lite0_model, limits=limits)
    with server as url:
        _wait_ready(url)
        host = url.removeprefix("http://")
        with StalledConnections(url, 10, header_prefix(host)) as heads, \
                StalledConnections(url, 5, b"") as silent:
            assert heads.wait_closed(1.5 + SLACK_S) and silent.wait_closed(1.5 + SLACK_S)
            summaries = heads.summary(), silent.summary()
        for summary in summaries:
            assert summary["answers"] == {"none": summary["connections"]}  # nothing to answer
            assert 1.4 <= summary["closed_after_s"]["min"]
            assert summary["closed_after_s"]["max"] <= 1.5 + SLACK_S
        assert _metric(url, "frankensplit_header_timeouts_total") == 15


def test_connections_beyond_the_cap_are_refused_at_once(lite0_model, packets):
    limits = ConnectionLimits(max_connections=6, header_timeout_s=60.0)
    _, server = _serve(lite0_model, limits=limits)
    with server as url:
        _wait_ready(url)
        time.sleep(0.5)  # the probes' connections are closed (by the client) and gone
        with StalledConnections(url, 6, b"") as held:
            time.sleep(0.5)
            with StalledConnections(url, 3, b"") as extra:
                assert extra.wait_closed(SLACK_S)
                refused = extra.summary()
            assert held.open_count == 6  # the cap closed the newcomers, not the holders
        assert refused["answers"] == {"503": 3}
        assert refused["closed_after_s"]["max"] < SLACK_S
        time.sleep(0.5)  # the server has seen the holders leave
        answer = post_packet(url, packets[0], retry=NO_RETRY)  # free again once they left
        assert answer["predictions"]
        assert _metric(url, "frankensplit_connections_refused_total") == 3
        assert _metric(url, 'frankensplit_limit{name="max_connections"}') == 6


def test_connection_limits_are_validated():
    with pytest.raises(ValueError, match="max_connections"):
        ConnectionLimits(max_connections=0)
    with pytest.raises(ValueError, match="header_timeout_s"):
        ConnectionLimits(header_timeout_s=0)
    with pytest.raises(ValueError, match="body_timeout_s"):
        ServerConfig(body_timeout_s=-1)


def test_serve_flags_reach_the_server_process(tmp_path, packets):
    """The production command: the timeout and cap flags, read back from ``/metrics``."""
    args = ["--model", MODEL_ID, "--body-timeout", "2", "--header-timeout", "3",
            "--max-connections", "40", "--log-level", "warning"]
    with ServeProcess(args, log=tmp_path / "server.log") as server:
        server.wait_ready(timeout=300)
        for name, value in (("body_timeout_s", 2), ("header_timeout_s", 3),
                            ("max_connections", 40)):
            assert _metric(server.url, f'frankensplit_limit{{name="{name}"}}') == value, name
        host = f"127.0.0.1:{server.port}"
        with StalledConnections(server.url, 10, upload_prefix(host)) as stalled:
            assert post_packet(server.url, packets[0], retry=NO_RETRY)["predictions"]
            assert stalled.wait_closed(2 + SLACK_S)
            assert stalled.summary()["answers"] == {"408": 10}
