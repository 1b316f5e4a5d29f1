"""The HTTP server, tested through a real uvicorn on a loopback port with edge-encoded packets."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
uvicorn = pytest.importorskip("uvicorn")

from PIL import Image, features

from frankensplit import bitstream
from frankensplit.cli import main as cli_main
from frankensplit.data import crop_transform, load_image, normalize_transform
from frankensplit.models.zoo import default_model_id
from frankensplit.runtime.edge.client import ServerError, post_packet
from frankensplit.runtime.server import ServerConfig, create_app, run_in_thread
from frankensplit.runtime.server.loading import load_server_model, resolve_model_spec, served_model

MODEL_ID = default_model_id()  # conftest's default_model: trained, its answers depend on the image
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TINY16 = Path(__file__).resolve().parents[2] / "shared/data/fixtures/tiny16"


def _images(n: int) -> list[Path]:
    images = sorted(TINY16.glob("*.jpg"))[:n]
    if len(images) < n:
        pytest.skip(f"fixture images not found in {TINY16} (needs the shared data folder)")
    return images


live_server = run_in_thread


def _wait_ready(url: str, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while (response := httpx.get(f"{url}/readyz")).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)
    return response


@pytest.fixture(scope="module")
def second(second_model):
    """A second trained model sharing the default's teacher (fixed-rate beside the variable-rate
    default): its answers differ from the default's."""
    return second_model


@pytest.fixture(scope="module")
def server(default_model, second):
    config = ServerConfig(max_batch=8, max_wait_ms=20.0, token=TOKEN, max_body_bytes=200_000)
    app = create_app({m.model_id: served_model(m) for m in (default_model, second)}, config)
    with live_server(app) as url:
        _wait_ready(url)
        yield url


@pytest.fixture(scope="module")
def packets(default_client):
    return [default_client.encode(path) for path in _images(8)]


@pytest.fixture(scope="module")
def reference(default_model, packets):
    """In-process answers: top-5 (probabilities, indexes) per packet, and the full vectors."""
    probs = default_model.server.decode(packets).softmax(1)
    values, indexes = probs.topk(5, dim=1)
    return values.numpy(), indexes.numpy(), probs.numpy()


def _check(answer: dict, reference, row: int) -> None:
    values, indexes, _ = reference
    top = answer["predictions"][:5]
    assert [p["index"] for p in top] == indexes[row][: len(top)].tolist()
    got = np.array([p["probability"] for p in top])
    np.testing.assert_allclose(got, values[row][: len(got)], rtol=1e-4, atol=1e-6)


def _vector(answer: dict) -> np.ndarray:
    """The full probability vector of an answer asked with ``topk`` = every class."""
    probs = np.full(len(answer["predictions"]), np.nan)
    for p in answer["predictions"]:
        probs[p["index"]] = p["probability"]
    return probs


def test_the_served_model_answers_each_photo_differently(reference):
    """The premise of every answer check here: another photo's answer is a different one (the
    untrained model these tests once served answered one class for every photo)."""
    _, indexes, probs = reference
    assert len(set(indexes[:, 0].tolist())) >= len(indexes) // 2
    for i in range(len(probs)):
        for j in range(i):
            assert np.abs(probs[i] - probs[j]).max() > 1e-2, (i, j)


def _post(url: str, body: bytes, headers: dict | None = None, query: str = "") -> httpx.Response:
    return httpx.post(f"{url}/v1/classify{query}", content=body,
                      headers={"Content-Type": "application/octet-stream",
                               **(AUTH if headers is None else headers)},
                      timeout=60)


def test_probes_and_metrics(server, second):
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz").json()["models"] == sorted([second.model_id, MODEL_ID])
    assert httpx.get(f"{server}/metrics").status_code == 401
    models = httpx.get(f"{server}/v1/models", headers=AUTH).json()["models"]
    assert {m["model_id"]: m["latent_shape"] for m in models}[MODEL_ID] == [48, 28, 28]


def test_edge_client_predictions_equal_in_process(server, default_client, packets, reference):
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    for row, path in enumerate(_images(3)):
        answer = default_client.classify(server, path, topk=5, token=TOKEN)
        assert answer["model_id"] == MODEL_ID and answer["packet_bytes"] == len(packets[row])
        assert answer["latent_shape"] == [48, 28, 28] and answer["decode_ms"] > 0
        _check(answer, reference, row)
        top = answer["predictions"][0]
        assert top["name"] == info.index_to_description(top["index"])
    assert len(_post(server, packets[0], query="?topk=2").json()["predictions"]) == 2


def test_concurrent_requests_are_batched(server, packets, reference):
    with ThreadPoolExecutor(len(packets)) as pool:
        responses = list(pool.map(lambda p: _post(server, p, query="?topk=1000"), packets))
    assert [r.status_code for r in responses] == [200] * len(packets)
    for row, response in enumerate(responses):
        _check(response.json(), reference, row)
        # every class's probability, not only the top: an answer is its own packet's
        np.testing.assert_allclose(_vector(response.json()), reference[2][row], rtol=1e-4,
                                   atol=1e-6)
    assert max(r.json()["batch_size"] for r in responses) > 1
    metrics = httpx.get(f"{server}/metrics", headers=AUTH).text
    assert f'frankensplit_requests_total{{model="{MODEL_ID}",status="200"}}' in metrics
    assert "frankensplit_request_latency_seconds_bucket" in metrics
    assert "frankensplit_received_bytes_total" in metrics


def test_several_models_by_id(server, second, default_model, default_client):
    x = torch.from_numpy(default_client.preprocess(_images(1)[0]))[None]
    packet = second.edge.encode(x)[0]
    answer = _post(server, packet, query="?topk=1000").json()
    assert answer["model_id"] == second.model_id
    expected = second.server.decode([packet]).softmax(1)[0].numpy()
    np.testing.assert_allclose(_vector(answer), expected, rtol=1e-4, atol=1e-6)
    # the check can fail: the default's decoder reads this very payload to another vector (at
    # its default rate when it is variable-rate: a packet of it names one)
    relabelled = bitstream.pack(dataclasses.replace(bitstream.unpack(packet), model_id=MODEL_ID,
                                                    rate=default_model.default_rate))
    other = default_model.server.decode([relabelled]).softmax(1)[0].numpy()
    assert np.abs(other - expected).max() > 1e-3


def test_error_statuses(server, packets):
    packet = bitstream.unpack(packets[0])
    cases = {
        400: [b"not a packet", packets[0][:-1] + bytes([packets[0][-1] ^ 1]),
              bitstream.pack(bitstream.Packet(MODEL_ID, (48, 14, 14), packet.payload,
                                              packet.rate))],
        404: [bitstream.pack(bitstream.Packet("no-such-model", packet.shape, packet.payload))],
        413: [packets[0] + bytes(200_000)],
    }
    for status, bodies in cases.items():
        for body in bodies:
            response = _post(server, body)
            assert response.status_code == status, response.text
            assert response.json()["detail"]
    assert "magic" in _post(server, b"not a packet").json()["detail"]
    assert "no-such-model" in _post(server, cases[404][0]).json()["detail"]
    assert _post(server, packets[0], query="?topk=0").status_code == 400
    assert _post(server, packets[0], headers={}).status_code == 401
    response = _post(server, packets[0], headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    with pytest.raises(ServerError, match="404"):
        post_packet(server, cases[404][0], token=TOKEN)
    metrics = httpx.get(f"{server}/metrics", headers=AUTH).text
    assert 'frankensplit_requests_total{model="-",status="404"}' in metrics
    assert f'frankensplit_requests_total{{model="{MODEL_ID}",status="400"}}' in metrics


def test_forged_payloads_cannot_take_the_server_down(server, packets, reference):
    """Valid framing around an empty or hostile payload: compressai's decoder would segfault.
    The framing names the served packets' rate (a variable-rate default's), so each payload
    reaches the decoder rather than being refused for a missing rate."""
    rate = bitstream.unpack(packets[0]).rate
    for payload in (b"", b"\xff" * 3, b"\xff" * 150_000):
        body = bitstream.pack(bitstream.Packet(MODEL_ID, (48, 28, 28), payload, rate))
        assert _post(server, body).status_code in (200, 400)
    _check(_post(server, packets[0]).json(), reference, 0)  # still serving


def test_readiness_follows_a_background_loader(default_model, packets, reference):
    release = threading.Event()

    def loader():
        release.wait(30)
        return [served_model(default_model)]

    app = create_app(config=ServerConfig(isolate_decoder=False, max_batch=1), loader=loader)
    with live_server(app) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 503
        assert _post(url, packets[0], headers={}).status_code == 503
        assert httpx.post(f"{url}/v1/classify-image", content=b"x").status_code == 503
        release.set()
        _wait_ready(url)
        _check(_post(url, packets[1], headers={}).json(), reference, 1)  # in-process decoder


def test_failed_loader_is_reported_on_readyz():
    def loader():
        raise ValueError("weights missing")

    with live_server(create_app(loader=loader)) as url:
        deadline = time.monotonic() + 30
        while (body := httpx.get(f"{url}/readyz").json())["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert body == {"status": "failed", "detail": "ValueError: weights missing"}


def test_server_bundle_loads_the_same_model(default_bundle, packets, reference):
    loaded = load_server_model(str(default_bundle.server_dir))
    assert (loaded.model_id, loaded.latent_shape) == (MODEL_ID, (48, 28, 28))
    values, indexes = loaded.part.decode(packets[:2]).softmax(1).topk(5, dim=1)
    np.testing.assert_array_equal(indexes.numpy(), reference[1][:2])
    np.testing.assert_allclose(values.numpy(), reference[0][:2], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="serve needs a server bundle"):
        resolve_model_spec(str(default_bundle.edge_dir))


def test_create_app_and_serve_cli_validate_arguments(default_model, capsys):
    with pytest.raises(ValueError, match="exactly one"):
        create_app()
    with pytest.raises(ValueError, match="server part for"):
        create_app({"other-id": default_model.server})
    with pytest.raises(ValueError, match="max_batch"):
        ServerConfig(max_batch=0)
    assert cli_main(["serve", "--model", "no-such-model"]) == 2
    assert "unknown model id" in capsys.readouterr().err


def _crop_file(model, fmt: str, size: int | None = None) -> bytes:
    """The first fixture photo's teacher input crop (or a ``size`` resize of it) as ``fmt``."""
    crop = crop_transform(model.data_config)(load_image(_images(1)[0]))
    if size is not None:
        crop = crop.resize((size, size))
    buffer = io.BytesIO()
    crop.save(buffer, fmt, **({} if fmt in ("PNG", "GIF") else {"quality": 30}))
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "AVIF", "PNG"])
def test_classify_image_answers_with_the_whole_teacher(server, default_model, fmt):
    """Codec offloading: the server decodes the crop and runs the unsplit teacher, exactly as
    `frankensplit eval` scores a codec (decode, normalise, teacher)."""
    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("this Pillow has no AVIF")
    data = _crop_file(default_model, fmt)
    response = httpx.post(f"{server}/v1/classify-image?topk=1000", content=data,
                          headers={**AUTH, "X-Request-Id": f"img-{fmt}"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-Id"] == f"img-{fmt}"
    answer = response.json()
    assert (answer["format"], answer["payload_bytes"]) == (fmt, len(data))
    assert answer["backbone"] == default_model.teacher.name and answer["image_decode_ms"] > 0
    config = default_model.data_config
    x = normalize_transform(config)(Image.open(io.BytesIO(data)).convert("RGB"))[None]
    expected = default_model.teacher(x).softmax(1)[0].numpy()
    np.testing.assert_allclose(_vector(answer), expected, rtol=1e-4, atol=1e-6)
    top = answer["predictions"][0]
    assert top["name"] and top["index"] == int(expected.argmax())


def test_classify_image_errors(server, default_model, packets):
    jpeg = _crop_file(default_model, "JPEG")
    cases = {
        400: [b"not an image", jpeg[: len(jpeg) // 2], _crop_file(default_model, "PNG", 100),
              _crop_file(default_model, "GIF"), packets[0]],
        413: [_crop_file(default_model, "PNG", 300), jpeg + bytes(200_000)],
    }
    details = []
    for status, bodies in cases.items():
        for body in bodies:
            response = httpx.post(f"{server}/v1/classify-image", content=body, headers=AUTH,
                                  timeout=60)
            assert response.status_code == status, (len(body), response.text)
            details.append(response.json()["detail"])
    assert "not a JPEG/WEBP" in details[0]
    assert "cannot decode the JPEG image" in details[1]  # header fine, data cut: decoding fails
    assert "100x100" in details[2] and "224x224" in details[2] and "300x300" in details[5]

    def post(query: str = "", headers: dict | None = None) -> httpx.Response:
        return httpx.post(f"{server}/v1/classify-image{query}", content=jpeg, timeout=60,
                          headers=AUTH if headers is None else headers)

    assert post(headers={}).status_code == 401
    assert post("?topk=0").status_code == 400
    response = post("?backbone=resnet50")
    assert response.status_code == 404 and MODEL_ID in response.json()["detail"]
    assert post("?backbone=tf_efficientnet_lite0").status_code == 200
    with pytest.raises(ServerError, match="400"):
        post_packet(server, b"not an image", token=TOKEN, endpoint="/v1/classify-image")


def test_decode_command_prints_the_servers_predictions(server, default_model, packets, tmp_path,
                                                       capsys):
    """``frankensplit decode`` and ``serve`` answer in one vocabulary, with the same values."""
    path = tmp_path / "photo.fsb"
    path.write_bytes(packets[0])
    assert cli_main(["decode", "--model", MODEL_ID, str(path), "--topk", "3"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    served = _post(server, packets[0], query="?topk=3").json()["predictions"]
    assert [p["index"] for p in line["predictions"]] == [p["index"] for p in served]
    assert [p["name"] for p in line["predictions"]] == [p["name"] for p in served]
    np.testing.assert_allclose([p["probability"] for p in line["predictions"]],
                               [p["probability"] for p in served], rtol=1e-4, atol=1e-6)
    assert line["model_id"] == MODEL_ID and line["bytes"] == len(packets[0])
