"""The server half as ONNX (``export --server-onnx``, ``serve --onnx``): exported from the real
model with the edge bundle's tables, served by the real app on a loopback port next to the torch
server, answering the torch-free edge client's packets like it (probabilities within float32
rounding, same classes), refusing bad input alike, every rate of a variable-rate model, and never
importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from frankensplit import bitstream
from frankensplit.blueprints import BLUEPRINTS
from frankensplit.cli import main as cli_main
from frankensplit.models.architecture import Architecture
from frankensplit.models.codec_file import save_codec
from frankensplit.models.zoo import load_model_file
from frankensplit.runtime.edge.bundle import OnnxServerManifest, Preprocess, read_manifest
from frankensplit.runtime.edge.export import export_server_onnx
from frankensplit.runtime.server import ServerConfig, create_app, run_in_thread
from frankensplit.runtime.server.loading import served_model
from frankensplit.runtime.server.onnx_server import load_onnx_server_model
from frankensplit.runtime.server.sandbox import SandboxCoder, SandboxedDecoder
from frankensplit.threads import seeded
from tests.conftest import REPO, TINY16
from tests.test_models import tiny_model
from tests.test_runtime_client import coded_rates, table_files

#: Largest |p_onnx - p_torch| accepted on any class probability (float32 reordering: ~1e-6).
PROB_ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def onnx_dir(default_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onnx") / "server-onnx"
    export_server_onnx(default_model, folder)
    return folder


@pytest.fixture(scope="module")
def packets(default_client) -> list[bytes]:
    """The edge client's packets of 8 photos; a variable-rate default's at its lowest, default
    and highest rate in turn (`coded_rates`), so that a batch mixes rates."""
    images = sorted(TINY16.glob("*.jpg"))[:8]
    if len(images) < 8:
        pytest.skip(f"fixture images not found in {TINY16}")
    rates = coded_rates(default_client)
    return [default_client.encode(p, rates[i % len(rates)]) for i, p in enumerate(images)]


def _ready(url: str) -> str:
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.05)
    return url


@pytest.fixture(scope="module")
def servers(default_model, onnx_dir):
    """(torch URL, ONNX URL): the same model, both sandboxed, batching as ``serve`` does."""
    config = ServerConfig(max_batch=8, max_wait_ms=20.0)
    torch_app = create_app({default_model.model_id: served_model(default_model)}, config)
    onnx_model = load_onnx_server_model(onnx_dir, threads=1)
    onnx_app = create_app({onnx_model.model_id: onnx_model}, config)
    with run_in_thread(torch_app) as torch_url, run_in_thread(onnx_app) as onnx_url:
        yield _ready(torch_url), _ready(onnx_url)


def _post(url: str, body: bytes, query: str = "?topk=1000", path: str = "/v1/classify"):
    return httpx.post(f"{url}{path}{query}", content=body, timeout=60,
                      headers={"Content-Type": "application/octet-stream"})


def _vector(answer: dict) -> np.ndarray:
    probs = np.full(len(answer["predictions"]), np.nan)
    for p in answer["predictions"]:
        probs[p["index"]] = p["probability"]
    return probs


def test_the_export_holds_the_graph_the_edge_tables_and_the_class_names(
        onnx_dir, default_bundle, default_model) -> None:
    manifest = read_manifest(onnx_dir)  # every file's sha256 verified
    assert isinstance(manifest, OnnxServerManifest)
    assert manifest.model_id == default_model.model_id and manifest.num_classes == 1000
    assert tuple(manifest.latent_shape) == default_model.latent_shape
    edge = read_manifest(default_bundle.edge_dir)
    assert manifest.bitstream_version == edge.bitstream_version
    assert manifest.rate_indexes == edge.rate_indexes  # (None,), or every rate index
    # the edge bundle's table files (per rate: `rate_table_file`), byte for byte, and nothing else
    tables = set(edge.files) - {edge.encoder_file}
    assert tables == table_files(default_model.rates)
    assert set(manifest.files) == {manifest.classifier_file, manifest.class_names_file, *tables}
    for name in tables:
        assert (onnx_dir / name).read_bytes() == (default_bundle.edge_dir / name).read_bytes()
    model = load_onnx_server_model(onnx_dir)
    batch, *shape = model.part.session.get_inputs()[0].shape
    assert isinstance(batch, str) and tuple(shape) == default_model.latent_shape  # dynamic batch
    assert len(model.class_names) == 1000 and model.class_names[0].startswith("tench")


def test_the_onnx_server_answers_like_the_torch_server(servers, packets, default_model) -> None:
    torch_url, onnx_url = servers
    reference = default_model.server.decode(packets).softmax(1).numpy()  # in process, torch
    with ThreadPoolExecutor(8) as pool:  # concurrent: the ONNX server batches them
        onnx_answers = list(pool.map(lambda p: _post(onnx_url, p).json(), packets))
    torch_answers = [_post(torch_url, p).json() for p in packets]
    assert max(a["batch_size"] for a in onnx_answers) > 1
    assert len({int(np.argmax(r)) for r in reference}) > 1  # the photos are told apart
    for ours, theirs, expected in zip(onnx_answers, torch_answers, reference):
        assert ours.keys() == theirs.keys()
        for key in ("model_id", "encoder_id", "backbone", "latent_shape", "payload_bytes"):
            assert ours[key] == theirs[key], key
        assert ours["predictions"][0]["index"] == theirs["predictions"][0]["index"]
        assert ours["predictions"][0]["name"] == theirs["predictions"][0]["name"]
        assert np.abs(_vector(ours) - _vector(theirs)).max() < PROB_ATOL
        assert np.abs(_vector(ours) - expected).max() < PROB_ATOL
    # the same listing (rates and their recorded figures included), the default rate too: the
    # torch server serves the in-memory model, the ONNX server its bundle's manifest
    listed = [httpx.get(f"{url}/v1/models").json() for url in (onnx_url, torch_url)]
    assert [m["default_rate"] for m in listed[0]["models"]] == [default_model.default_rate]
    assert listed[0] == listed[1]


def test_bad_input_is_refused_alike_and_images_with_the_reason(servers, default_model) -> None:
    torch_url, onnx_url = servers
    (small,) = default_model.edge.encode(torch.zeros(1, 3, 64, 64))  # a (48, 8, 8) latent
    other = bitstream.pack(bitstream.Packet("fs-no-such-model", (48, 28, 28), b"\x00" * 9))
    for body, status in ((b"not a packet", 400), (small, 400), (other, 404)):
        ours, theirs = _post(onnx_url, body), _post(torch_url, body)
        assert ours.status_code == theirs.status_code == status
        assert ours.json() == theirs.json()
    image = _post(onnx_url, (TINY16 / "labels.csv").read_bytes(), "", "/v1/classify-image")
    assert image.status_code == 404 and "ONNX server half" in image.json()["detail"]


def test_a_batch_of_two_latent_shapes_is_refused_as_in_torch(onnx_dir, default_model) -> None:
    """`decode` of packets of several latent shapes: the same ValueError as
    `ServerPart.decode_latent`, before any decoding (not numpy's bare stacking error)."""
    part = load_onnx_server_model(onnx_dir, threads=1).part.with_latent_shape(None)
    mixed = [*default_model.edge.encode(torch.zeros(1, 3, 64, 64)),  # a (48, 8, 8) latent
             *default_model.edge.encode(torch.zeros(1, 3, 96, 96))]  # a (48, 12, 12) latent
    with pytest.raises(ValueError, match="packets of one batch must share a latent shape") as ours:
        part.decode(mixed)
    with pytest.raises(ValueError) as theirs:
        default_model.server.decode(mixed)
    assert str(ours.value) == str(theirs.value)


def test_every_rate_of_a_variable_rate_model_decodes_as_in_torch(tmp_path) -> None:
    """Tables and inverse gains per rate from the bundle; in process and sandboxed."""
    arch = Architecture("tf_efficientnet_lite0", entropy="gained_factorized", rates=(16.0, 1.0))
    model = arch.build("fs-test-vr-onnx", teacher_weights=None).eval()
    with torch.no_grad():
        model.entropy.log_gain.copy_(torch.tensor([[-1.0], [1.0]]).expand(-1, 48))
        model.entropy.log_inverse_gain.copy_(-model.entropy.log_gain)
    model.update(force=True)
    export_server_onnx(model, tmp_path)
    part = load_onnx_server_model(tmp_path, threads=1).part
    with seeded(0):
        x = torch.randn(2, 3, 224, 224)
    sandbox = SandboxedDecoder({part.encoder_id: part.coding_tables()}, timeout_s=10)
    try:
        sandboxed = part.with_coder(SandboxCoder(sandbox, part.encoder_id))
        for rate in (0, 1):
            packets = model.edge.encode(x, rate)
            expected = model.server.decode(packets).numpy()
            for served in (part, sandboxed):
                assert np.abs(served.decode(packets) - expected).max() < 1e-4
    finally:
        sandbox.close()
    wrong = bitstream.unpack(packets[0])
    with pytest.raises(bitstream.CorruptError, match="needs a rate index in 0..1"):
        part.check(bitstream.Packet(wrong.model_id, wrong.shape, wrong.payload, 5))


def test_server_half_records_the_models_own_preprocessing(tmp_path) -> None:
    """A model with its own input size (encoder reuse's case): the ONNX manifest describes the
    model's preprocessing, as the edge bundle does, not the teacher's own."""
    arch = Architecture("tf_efficientnet_lite0", input_size=192, crop_pct=0.9)
    model = arch.build("fs-test-own-input", teacher_weights=None).eval()
    model.update(force=True)
    manifest = export_server_onnx(model, tmp_path)
    assert (manifest.preprocess.crop, model.teacher.data_config["input_size"][-1]) == (192, 224)
    assert manifest.preprocess == Preprocess.from_data_config(model.data_config)


def test_a_tail_stored_in_float16_exports_a_float32_server_half(tmp_path) -> None:
    """Entropic Student's own tail, read from a float16 codec file into the float32 model:
    the graph takes and gives float32 and answers as the loaded model does."""
    arch = Architecture("tf_efficientnet_lite0", method="entropic_student",
                        encoder="entropic_student", decoder="entropic_student", latent_channels=24,
                        split_reduction=4, tail="trained")
    save_codec(arch.build("es-test-onnx-s2", teacher_weights=None).eval(),
               tmp_path / "codec.safetensors", tail_dtype="float16")
    model = load_model_file(tmp_path / "codec.safetensors", teacher_weights=None)
    export_server_onnx(model, tmp_path / "onnx")  # checks the graph against torch at a batch of 2
    part = load_onnx_server_model(tmp_path / "onnx", threads=1).part
    assert [(t.name, t.type) for t in (*part.session.get_inputs(), *part.session.get_outputs())] \
        == [("y_hat", "tensor(float)"), ("logits", "tensor(float)")]
    with seeded(0):
        packets = model.edge.encode(torch.randn(2, 3, 224, 224))
    assert np.abs(part.decode(packets) - model.server.decode(packets).numpy()).max() < 1e-4


@pytest.mark.parametrize("family", BLUEPRINTS.names())
def test_every_blueprint_family_exports_its_server_half(family: str, tmp_path) -> None:
    model = tiny_model(family).eval()
    model.update()
    export_server_onnx(model, tmp_path)  # checks the graph against torch at a batch of 2
    part = load_onnx_server_model(tmp_path, threads=1).part
    with seeded(0):
        packets = model.edge.encode(torch.randn(3, 3, 224, 224))
    assert np.abs(part.decode(packets) - model.server.decode(packets).numpy()).max() < 1e-4


def test_serve_onnx_runs_without_torch(onnx_dir, packets, servers, tmp_path) -> None:
    """``frankensplit serve --onnx`` in a fresh interpreter: answers like the torch server and
    never imports torch, timm or torchvision."""
    torch_url, _ = servers
    files = []
    for i, packet in enumerate(packets[:2]):
        files.append(tmp_path / f"{i}.fsb")
        files[-1].write_bytes(packet)
    code = f"""
import json, socket, sys, threading, time, urllib.request
from frankensplit.cli import main
from frankensplit.runtime.edge.client import post_packet
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
argv = ["serve", "--onnx", "--model", {str(onnx_dir)!r}, "--port", str(port), "--threads", "1",
        "--log-level", "warning"]
threading.Thread(target=main, args=(argv,), daemon=True).start()
url, deadline = f"http://127.0.0.1:{{port}}", time.monotonic() + 90
while True:
    try:
        if urllib.request.urlopen(url + "/readyz").status == 200:
            break
    except OSError:
        assert time.monotonic() < deadline, "not ready"
        time.sleep(0.1)
answers = [post_packet(url, open(p, "rb").read(), topk=5) for p in sys.argv[1:]]
heavy = sorted(m for m in ("torch", "timm", "torchvision") if m in sys.modules)
print(json.dumps({{"answers": answers, "heavy": heavy, "ort": "onnxruntime" in sys.modules}}))
"""
    out = subprocess.run([sys.executable, "-c", code, *map(str, files)], capture_output=True,
                         text=True, cwd=REPO, timeout=180, check=True)
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["heavy"] == [] and result["ort"], result
    for answer, packet in zip(result["answers"], packets):
        expected = _post(torch_url, packet, "?topk=5").json()["predictions"]
        assert [p["index"] for p in answer["predictions"]] == [p["index"] for p in expected]
        got = np.array([p["probability"] for p in answer["predictions"]])
        assert np.abs(got - [p["probability"] for p in expected]).max() < PROB_ATOL


def test_serve_refuses_the_wrong_half_in_one_line(onnx_dir, default_bundle, capsys) -> None:
    assert cli_main(["serve", "--onnx", "--model", str(default_bundle.server_dir)]) == 2
    assert "export --server-onnx" in capsys.readouterr().err
    assert cli_main(["serve", "--model", str(onnx_dir)]) == 2
    assert "serve it with --onnx" in capsys.readouterr().err
    assert cli_main(["serve", "--onnx", "--model", "fs-lite0-l4"]) == 2
    assert "--server-onnx" in capsys.readouterr().err
