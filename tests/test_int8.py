"""int8 edge encoder: export (calibrated on the fixtures), manifest record, the integer kernels ONNX
Runtime runs, and int8 packets served exactly by the unchanged server."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime.quantization")

from frankensplit.cli import main as cli_main
from frankensplit.files import file_sha256
from frankensplit.runtime.edge.bundle import EdgeManifest, read_manifest
from frankensplit.runtime.edge.client import EdgeClient
from frankensplit.runtime.edge.export import Int8Calibration, export_bundle
from frankensplit.runtime.edge.quantize import calibration_digest, calibration_images, optimized_ops

REPO = Path(__file__).resolve().parents[1]
TINY16 = REPO.parent / "shared/data/fixtures/tiny16"
CALIBRATION_IMAGES = 8


@pytest.fixture(scope="module")
def tiny16() -> Path:
    """The fixture photos (module-scoped here: the int8 bundle is built once)."""
    if len(list(TINY16.glob("*.jpg"))) < 16:
        pytest.skip(f"fixture images not found in {TINY16} (needs the shared data folder)")
    return TINY16


@pytest.fixture(scope="module")
def int8_bundle(lite0_model, tiny16, tmp_path_factory):
    """Edge (int8) and server bundles of the shared lite0 model, calibrated on 8 fixture images."""
    calibration = Int8Calibration(tiny16, CALIBRATION_IMAGES)
    return export_bundle(lite0_model, tmp_path_factory.mktemp("int8"), int8=calibration)


@pytest.fixture(scope="module")
def int8_client(int8_bundle):
    return EdgeClient(int8_bundle.edge_dir, threads=1)


def test_manifest_records_precision_and_calibration(int8_bundle, lite0_bundle, tiny16):
    edge = read_manifest(int8_bundle.edge_dir)  # verifies every sha256
    assert edge.encoder_precision == "int8" and edge.encoder_file == "encoder_int8.onnx"
    assert not (int8_bundle.edge_dir / "encoder.onnx").exists()  # the device gets one graph
    q = edge.quantization
    assert q.quant_format == "QDQ" and "per output channel" in q.weights
    assert q.calibration_images == CALIBRATION_IMAGES
    assert q.calibration_sha256 == calibration_digest(calibration_images(tiny16, CALIBRATION_IMAGES))
    assert q.float_encoder_sha256 != edge.files["encoder_int8.onnx"]
    assert q.float_nodes and 0 < q.latent_rms_error < 0.5
    fp32 = read_manifest(lite0_bundle.edge_dir)
    assert fp32.encoder_precision == "fp32" and fp32.quantization is None
    assert edge.model_id == fp32.model_id  # the server needs nothing new
    for name in ("quantized_cdf.npy", "cdf_length.npy", "offset.npy", "medians.npy"):
        assert edge.files[name] == fp32.files[name]


def test_onnxruntime_runs_integer_kernels(int8_bundle):
    ops = optimized_ops(int8_bundle.edge_dir / "encoder_int8.onnx")
    assert ops["com.microsoft:QLinearConv"] == 9  # every conv of g_a, none left in float
    assert not any(op.endswith(":Conv") for op in ops)


def test_int8_packets_are_decoded_exactly(int8_client, edge_client, lite0_model, tiny16):
    images = sorted(tiny16.glob("*.jpg"))
    packets = int8_client.encode_batch(images)
    x = np.stack([int8_client.preprocess(p) for p in images])  # (16, 3, 224, 224)
    y = int8_client.encode_latent(x)  # (16, 48, 28, 28)
    symbols = np.stack([int8_client.coder.symbols(yi) for yi in y])
    y_hat = lite0_model.server.decode_latent(packets).numpy()
    np.testing.assert_array_equal(y_hat, np.stack([int8_client.coder.dequantize(s) for s in symbols]))
    fp32 = np.stack([edge_client.coder.symbols(yi) for yi in edge_client.encode_latent(x)])
    differ = float((symbols != fp32).mean())
    print(f"\nint8 vs fp32 on {len(images)} fixture images: {differ:.2%} of symbols differ")
    assert differ < 0.10


def test_served_int8_packet(int8_client, lite0_model, tiny16):
    from frankensplit.runtime.server import create_app, run_in_thread
    from frankensplit.runtime.server.loading import served_model

    image = min(tiny16.glob("*.jpg"))
    app = create_app({lite0_model.model_id: served_model(lite0_model)})
    with run_in_thread(app) as url:
        answer = int8_client.classify(url, image, topk=5)
    expected = lite0_model.server.decode([int8_client.encode(image)]).topk(5, dim=1).indices[0]
    assert answer["model_id"] == lite0_model.model_id
    assert [p["index"] for p in answer["predictions"]] == expected.tolist()


def test_int8_client_never_imports_torch(int8_bundle, tiny16):
    code = f"""
import sys
from frankensplit.runtime.edge.client import EdgeClient
packet = EdgeClient({str(int8_bundle.edge_dir)!r}).encode({str(min(tiny16.glob('*.jpg')))!r})
print(len(packet), "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120, check=True)
    size, torch_loaded = out.stdout.split()
    assert int(size) > 0 and torch_loaded == "False", out.stdout


def test_manifest_precision_must_match_its_record(int8_bundle):
    edge = read_manifest(int8_bundle.edge_dir)
    with pytest.raises(ValueError, match="quantization record"):
        dataclasses.replace(edge, quantization=None)
    with pytest.raises(ValueError, match="encoder_precision"):
        dataclasses.replace(edge, encoder_precision="int4")
    raw = json.loads((int8_bundle.edge_dir / "manifest.json").read_text())
    assert EdgeManifest.__dataclass_fields__.keys() >= raw.keys()
    assert raw["files"]["encoder_int8.onnx"] == file_sha256(int8_bundle.edge_dir / "encoder_int8.onnx")


def test_calibration_images_are_spread_and_checked(tmp_path, tiny16):
    picked = calibration_images(tiny16, 4)
    every = calibration_images(tiny16, 1000)
    assert len(picked) == 4 and picked[0] == every[0] and picked[-1] == every[-1]
    with pytest.raises(ValueError, match="not found"):
        Int8Calibration(tmp_path / "missing")
    with pytest.raises(ValueError, match="no images"):
        Int8Calibration(tmp_path)
    with pytest.raises(ValueError, match=">= 1"):
        Int8Calibration(tiny16, 0)


@pytest.mark.parametrize(("extra", "message"), [
    (["--int8"], "--int8 and --calibration"),
    (["--int8", "--calibration", "MISSING"], "calibration folder not found"),
    (["--int8", "--calibration", "EMPTY"], "no images"),
    (["--int8", "--calibration", "EMPTY", "--calibration-images", "0"], ">= 1"),
])
def test_cli_export_int8_refuses_bad_calibration(tmp_path, capsys, extra, message):
    (tmp_path / "empty").mkdir()
    paths = {"MISSING": str(tmp_path / "missing"), "EMPTY": str(tmp_path / "empty")}
    argv = ["export", "--model", "fs-lite0-untrained", "--out", str(tmp_path / "out"),
            *(paths.get(a, a) for a in extra)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written on bad input
