"""Export + torch-free edge client: bundles, preprocessing parity, byte-exact packets, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")

from frankensplit import bitstream
from frankensplit.cli import main as cli_main
from frankensplit.data import load_image, make_transform
from frankensplit.models.zoo import default_model_id
from frankensplit.runtime.edge.bundle import GAIN_NAMES, TABLE_NAMES, rate_table_file, read_manifest
from frankensplit.runtime.edge.client import EdgeClient, classify_url

MODEL_ID = default_model_id()  # conftest's default_model: trained, its answers depend on the image
REPO = Path(__file__).resolve().parents[1]
TINY16 = REPO.parent / "shared/data/fixtures/tiny16"


def _images() -> list[Path]:
    images = sorted(TINY16.glob("*.jpg"))
    if len(images) < 16:
        pytest.skip(f"fixture images not found in {TINY16} (needs the shared data folder)")
    return images


def coded_rates(model) -> tuple[int | None, ...]:
    """The rate indexes a test codes ``model`` (a model or an `EdgeClient`) at: None for a
    fixed-rate one; a variable-rate one's lowest, default (where it has one) and highest."""
    if model.rates is None:
        return (None,)
    default = () if model.default_rate is None else (model.default_rate,)
    return tuple(sorted({0, *default, len(model.rates) - 1}))


def table_files(rates: tuple[float, ...] | None) -> set[str]:
    """The coding-table files of a bundle: per rate index (one set for a fixed rate) the
    `TABLE_NAMES`, and a variable-rate model's `GAIN_NAMES`."""
    indexes = (None,) if rates is None else range(len(rates))
    return {rate_table_file(name, rate) for rate in indexes
            for name in (*TABLE_NAMES, *(GAIN_NAMES if rate is not None else ()))}


def _stored(codec: dict[str, np.ndarray], name: str, rate: int | None) -> np.ndarray:
    """The server codec file's tensor that bundle table ``name`` of ``rate`` is derived from: the
    bottleneck's own table, the middle column of its quantiles (the medians), or a gain vector
    (``exp`` of the stored log gain, as the entropy model computes it)."""
    prefix = "entropy.entropy_bottleneck" if rate is None else f"entropy.bottlenecks.{rate}"
    if name == "medians":
        return codec[f"{prefix}.quantiles"][:, 0, 1]
    if name in GAIN_NAMES:
        return torch.from_numpy(codec[f"entropy.log_{name}"][rate]).exp().numpy()
    return codec[f"{prefix}._{name}"]


@pytest.mark.parametrize("kind", ["default", "fixed"])
def test_bundles_are_complete_and_not_pickled(kind, request):
    """The zoo default (variable-rate: tables per rate, bitstream version 2) and the fixed-rate
    reference (one table set, version 1) export every table the server decodes with, and
    nothing else, pickled nothing."""
    bundle, model = request.getfixturevalue(f"{kind}_bundle"), request.getfixturevalue(f"{kind}_model")
    edge = read_manifest(bundle.edge_dir)
    server = read_manifest(bundle.server_dir)
    assert edge.model_id == server.model_id == model.model_id
    if kind == "default":
        assert model.model_id == MODEL_ID
    version = bitstream.FORMAT_VERSION if model.rates is None else bitstream.RATE_VERSION
    assert edge.bitstream_version == server.bitstream_version == version
    assert (edge.rates, edge.default_rate) == (model.rates, model.default_rate)
    assert edge.opset >= 17 and edge.latent_shape == server.latent_shape == (48, 28, 28)
    assert (edge.preprocess.resize, edge.preprocess.crop) == (256, 224)
    assert edge.preprocess.interpolation == "bicubic"
    assert server.architecture.teacher == model.teacher.name
    assert set(edge.files) == {edge.encoder_file, *table_files(model.rates)}
    assert set(server.files) == {server.codec_file}
    from safetensors.numpy import load_file

    codec = load_file(str(bundle.server_dir / server.codec_file))
    for rate, tables in model.server.coding_tables().items():  # {None: ...}: the fixed rate
        assert set(tables) == set(TABLE_NAMES) | (set(GAIN_NAMES) if rate is not None else set())
        for name, table in tables.items():
            saved = np.load(bundle.edge_dir / rate_table_file(name, rate), allow_pickle=False)
            np.testing.assert_array_equal(saved, table)
            # the edge codes with exactly the tables (medians, gains) the server decodes with
            np.testing.assert_array_equal(saved, _stored(codec, name, rate))
    suffixes = {p.suffix for d in (bundle.edge_dir, bundle.server_dir) for p in d.iterdir()}
    assert suffixes <= {".json", ".onnx", ".npy", ".safetensors"}


def test_onnx_encoder_has_dynamic_batch(default_client):
    x = np.random.default_rng(0).standard_normal((3, 3, 224, 224), dtype=np.float32)
    assert default_client.encode_latent(x).shape == (3, 48, 28, 28)


@pytest.mark.parametrize("kind", ["default", "fixed"])
def test_corrupted_bundle_is_refused(kind, request, tmp_path):
    """A table file the manifest lists, changed, is refused: the fixed-rate bundle's one
    ``medians.npy``, a variable-rate bundle's highest rate's (``medians_r<r>.npy``)."""
    import shutil

    bundle = request.getfixturevalue(f"{kind}_bundle")
    copy = tmp_path / "edge"
    shutil.copytree(bundle.edge_dir, copy)
    medians = rate_table_file("medians", read_manifest(copy).rate_indexes[-1])
    assert (copy / medians).is_file()  # the bundle's own file is the one corrupted
    (copy / medians).write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="checksum mismatch"):
        EdgeClient(copy)
    with pytest.raises(ValueError, match="expected an edge bundle"):
        EdgeClient(bundle.server_dir)


def test_preprocessing_matches_torchvision_exactly(default_client, default_model):
    transform = make_transform(default_model.data_config)
    for path in _images():
        np.testing.assert_array_equal(default_client.preprocess(path),
                                      transform(load_image(path)).numpy())


@pytest.fixture(scope="module")
def torch_packets(default_model) -> dict[int | None, list[bytes]]:
    """The torch edge's packets of the 16 fixture photos, per rate of `coded_rates`."""
    transform = make_transform(default_model.data_config)
    x = torch.stack([transform(load_image(path)) for path in _images()])  # (16, 3, 224, 224)
    return {rate: default_model.edge.encode(x, rate) for rate in coded_rates(default_model)}


@pytest.mark.parametrize("threads", [1, 2])
def test_client_packets_are_the_torch_packets(default_client, default_bundle, default_model,
                                              torch_packets, threads):
    """The ONNX edge sends the bytes the torch edge would, at 1 and 2 client threads, at the
    default model's lowest, default and highest rate (`coded_rates`).

    The ONNX encoder's float output differs from torch's in the last bits (about 1e-5), so a
    latent value on a rounding boundary may round the other way: then that one symbol differs by
    1 and the packet differs. That is allowed only there: every symbol where the two edges differ
    must be off by exactly 1 at a latent value within 1e-4 of a rounding boundary (a half-integer
    of ``y * gain - median``: within ``1e-4 * gain`` of it after the gain, which scales the two
    edges' difference as it scales y), and such symbols must be rare. An export, preprocessing,
    gain or coder regression moves values far from the boundaries. (With the session-8
    `fs-lite0-l4`, one of 602,112 symbols on the 16 photos is such a tie: 0.4999988 from ONNX,
    0.5000007 from torch.) The symbols sent are in any case exactly what the torch server decodes
    (lossless coding).
    """
    client = default_client if threads == 1 else EdgeClient(default_bundle.edge_dir, threads=2)
    server = default_model.server
    images = _images()
    y_onnx = client.encode_latent(np.stack([client.preprocess(path) for path in images]))
    for rate, from_torch in torch_packets.items():
        coder = client.coders[rate]
        client_packets = client.encode_batch(images, rate)
        assert {bitstream.unpack(p).rate for p in client_packets} == {rate}
        y_hat = server.decode_latent(client_packets).numpy()  # (16, 48, 28, 28)
        expected = np.stack([coder.dequantize(coder.symbols(y)) for y in y_onnx])
        np.testing.assert_array_equal(y_hat, expected)  # lossless: exactly the symbols sent
        # batch size does not change bytes; the default rate is also the one left unnamed
        assert client.encode(images[0], None if rate == client.default_rate else rate) \
            == client_packets[0]
        y_torch = server.decode_latent(from_torch).numpy()
        gain, step = (np.ones(48, np.float32), 1.0) if coder.gain is None else (
            coder.gain, coder.inverse_gain.reshape(1, -1, 1, 1))  # one symbol's step in y_hat
        off = y_hat != y_torch
        # dequantized values: ((s + median) - (s' + median)) * inverse_gain is one step only up
        # to float32 rounding
        assert np.allclose((np.abs(y_hat - y_torch) / step)[off], 1, atol=1e-4), (
            f"rate {rate}: symbols differ by more than 1")
        centred = y_onnx * gain.reshape(1, -1, 1, 1) - coder.medians.reshape(1, -1, 1, 1)
        tolerance = np.broadcast_to(1e-4 * gain.reshape(1, -1, 1, 1), off.shape)[off]
        assert np.all(np.abs(np.abs(centred[off] - np.floor(centred[off])) - 0.5) < tolerance), (
            f"rate {rate}: ONNX and torch symbols differ away from a rounding boundary: "
            f"{centred[off][:8]}")
        assert off.sum() <= off.size // 100_000, f"rate {rate}: {off.sum()} of {off.size} differ"
        same = [a == b for a, b in zip(client_packets, from_torch)]
        assert all(same[i] for i in range(len(images)) if not off[i].any())  # same symbols, bytes


def _exact_ties(medians: torch.Tensor, gain: torch.Tensor, ties: torch.Tensor) -> list[int]:
    """Channels c where, for every tie t, the latent ``(median + t) / gain`` is centred exactly
    onto t in float32 (``y * gain - median == t``, as both coders compute it)."""
    return [c for c in range(medians.numel())
            if torch.equal(((medians[c] + ties) / gain[c]) * gain[c] - medians[c], ties)]


@pytest.mark.parametrize("kind", ["default", "fixed"])
def test_client_bytes_equal_torch_bytes_for_the_same_latent(kind, request):
    """Given the same y, the numpy coder and compressai's EntropyBottleneck emit identical bytes,
    at every rate of the variable-rate default (after its gain) and at the fixed-rate one's."""
    model = request.getfixturevalue(f"{kind}_model")
    client = (request.getfixturevalue("default_client") if kind == "default"
              else EdgeClient(request.getfixturevalue("fixed_bundle").edge_dir, threads=1))
    assert set(client.coders) == set((None,) if model.rates is None else range(len(model.rates)))
    # exact ties after centring on the (trained, non-integer) medians: round half to even
    # on channels whose median (and gain) leave them exact in float32
    ties = torch.tensor([0.5, 1.5, -0.5, 2.5])
    for rate, coder in client.coders.items():
        y = torch.randn(2, 48, 28, 28, generator=torch.Generator().manual_seed(1)) * 3
        if rate is None:
            all_medians, gain = model.entropy.medians(), torch.ones(48)
        else:
            all_medians, gain = model.entropy.medians(rate), model.entropy.gains(rate)[0]
        exact = _exact_ties(all_medians, gain, ties)
        assert len(exact) >= 4, f"rate {rate}: only channels {exact} hold exact ties"
        channels = exact[:4]
        medians = all_medians[channels]
        y[0, channels, 0, 0] = (medians + ties) / gain[channels]
        # float32: the ties are exact
        assert torch.equal(y[0, channels, 0, 0] * gain[channels] - medians, ties)
        expected = (model.entropy.compress(y) if rate is None
                    else model.entropy.compress(y, rate))
        assert [coder.encode(yi.numpy()) for yi in y] == expected, f"rate {rate}"


def test_edge_client_never_imports_torch(default_bundle):
    image = _images()[0]
    code = f"""
import sys
from frankensplit.runtime.edge.client import EdgeClient
client = EdgeClient({str(default_bundle.edge_dir)!r})
packet = client.encode({str(image)!r})
heavy = sorted(m for m in ("torch", "torchvision", "timm", "compressai") if m in sys.modules)
print(len(packet), heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120, check=True)
    size, heavy = out.stdout.split(" ", 1)
    assert int(size) > 0 and heavy.strip() == "[]", out.stdout


def _first_torch_importer(modules: list[str]) -> str | None:
    """Import ``modules`` in order in a fresh interpreter; the first after which torch is loaded."""
    code = """
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        pass  # a concern not built yet; its package __init__ may still have imported torch
    if "torch" in sys.modules:
        print(name)
        break
"""
    out = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True,
                         cwd=REPO, timeout=120, check=True)
    return out.stdout.strip() or None


def test_command_modules_import_lazily():
    """The CLI imports the command modules to build its parser: the CLI's own module and every
    command module, and any new one, pull in nothing heavy (heavy code is imported in ``run()``),
    so ``frankensplit --help`` works on a torch-free edge install."""
    from frankensplit.cli import COMMANDS

    lazy = ["frankensplit.cli", *COMMANDS.values()]
    assert {"frankensplit.commands.client", "frankensplit.commands.serve"} < set(lazy)
    assert _first_torch_importer(lazy) is None


def test_cli_client_does_not_import_torch(default_bundle, tmp_path):
    """``frankensplit client``, the edge's command, runs without ever importing torch."""
    image = _images()[0]
    code = f"""
import json, sys
from frankensplit.cli import main
rc = main(["client", "--bundle", {str(default_bundle.edge_dir)!r}, "--save", {str(tmp_path)!r},
           {str(image)!r}])
print(json.dumps({{"rc": rc, "torch": "torch" in sys.modules}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=180, check=True)
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["rc"] == 0, out.stdout + out.stderr
    packet = (tmp_path / f"{image.stem}.fsb").read_bytes()
    assert bitstream.unpack(packet).model_id == MODEL_ID
    assert not result["torch"], "torch was imported by `frankensplit client`"


def test_cli_export_writes_both_bundles(tmp_path, capsys):
    assert cli_main(["export", "--model", MODEL_ID, "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "edge/manifest.json").read_text())["model_id"] == MODEL_ID
    assert (tmp_path / "server/codec.safetensors").is_file()
    assert cli_main(["export", "--model", "no-such-model", "--out", str(tmp_path)]) == 2
    assert "unknown model id" in capsys.readouterr().err


def test_classify_url():
    assert classify_url("http://h:1", 3) == "http://h:1/v1/classify?topk=3"
    assert classify_url("https://h/api/", 5) == "https://h/api/v1/classify?topk=5"
    with pytest.raises(ValueError, match="http"):
        classify_url("file:///etc/passwd", 5)
