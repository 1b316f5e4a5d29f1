"""Runtime building blocks without a real model: rANS parity, sandbox, manifests, batching."""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
import pytest
from PIL import Image

from frankensplit.coding import FactorizedCoder, load_ans
from frankensplit.files import file_sha256
from frankensplit.runtime.edge.bundle import EdgeManifest, Preprocess, read_manifest, write_manifest
from frankensplit.runtime.edge.preprocess import preprocess
from frankensplit.runtime.server.batching import Batcher, QueueFullError
from frankensplit.runtime.server.sandbox import DecoderCrashedError, SandboxedDecoder

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bottleneck():
    from frankensplit.models.entropy import FactorizedPrior

    torch.manual_seed(0)
    prior = FactorizedPrior(8)
    with torch.no_grad():  # spread the learned quantiles so the tables have real tails
        prior.entropy_bottleneck.quantiles.mul_(3.0).add_(0.3)
    prior.update(force=True)
    return prior


@pytest.fixture(scope="module")
def tables(bottleneck):
    return {name: t.numpy() for name, t in bottleneck.tables().items()}


def test_ans_extension_is_shared_with_compressai():
    from frankensplit import _compressai  # imports compressai with its import warnings muted

    ans = sys.modules["compressai.ans"]
    assert _compressai.EntropyBottleneck is not None

    assert load_ans() is ans


def test_numpy_coder_matches_compressai_bytes_and_roundtrips(bottleneck, tables):
    coder = FactorizedCoder(**tables)
    y = torch.randn(3, 8, 5, 7, generator=torch.Generator().manual_seed(2)) * 4  # many escapes
    y[0, 0, 0, :3] = torch.tensor([0.5, -1.5, 2.5]) + bottleneck.medians()[0]  # ties
    strings = bottleneck.compress(y)
    for yi, expected in zip(y, strings):
        assert coder.encode(yi.numpy()) == expected
        symbols = coder.decode_symbols(expected, (5, 7))
        np.testing.assert_array_equal(symbols, coder.symbols(yi.numpy()))
    y_hat = bottleneck.decompress(strings, (5, 7)).numpy()
    np.testing.assert_array_equal(
        y_hat, np.stack([coder.dequantize(coder.decode_symbols(s, (5, 7))) for s in strings])
    )


def test_coder_rejects_inconsistent_tables(tables):
    with pytest.raises(ValueError, match="channel count"):
        FactorizedCoder(**{**tables, "offset": tables["offset"][:-1]})
    with pytest.raises(ValueError, match="integer"):
        FactorizedCoder(**{**tables, "quantized_cdf": tables["quantized_cdf"].astype(float)})
    with pytest.raises(ValueError, match="latent"):
        FactorizedCoder(**tables).encode(np.zeros((3, 4, 4), np.float32))


def test_sandbox_survives_payloads_that_crash_the_decoder(bottleneck, tables):
    """An empty payload segfaults compressai's decoder in-process; the sandbox only loses a worker."""
    coder = FactorizedCoder(**tables)
    y = torch.randn(2, 8, 28, 28, generator=torch.Generator().manual_seed(3))
    good = bottleneck.compress(y)
    sandbox = SandboxedDecoder({"m": tables}, timeout_s=10.0)
    try:
        out = sandbox.decode("m", [good[0], b"", b"\xff" * 3, good[1]], (28, 28))
        for i, j in ((0, 0), (3, 1)):
            np.testing.assert_array_equal(out[i], coder.symbols(y[j].numpy()))
        for bad in out[1:3]:  # decoded to junk or refused, never a dead server
            assert isinstance(bad, (np.ndarray, DecoderCrashedError))
        hostile = sandbox.decode("m", [b"\xff" * 400_000], (28, 28))[0]
        assert isinstance(hostile, (np.ndarray, DecoderCrashedError))
        np.testing.assert_array_equal(sandbox.decode("m", [good[1]], (28, 28))[0], out[3])
        with pytest.raises(ValueError, match="no entropy tables"):
            sandbox.decode("other", [good[0]], (28, 28))
    finally:
        sandbox.close()


def _torchvision_eval(image: Image.Image, config: Preprocess) -> np.ndarray:
    from torchvision import transforms as T

    transform = T.Compose([
        T.Resize(config.resize, interpolation=T.InterpolationMode(config.interpolation)),
        T.CenterCrop(config.crop), T.ToTensor(), T.Normalize(config.mean, config.std),
    ])
    return transform(image).numpy()


@pytest.mark.parametrize("size", [(302, 224), (224, 339), (500, 375), (97, 61), (256, 256)])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_preprocess_matches_torchvision(size, interpolation):
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
    config = Preprocess(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), interpolation)
    np.testing.assert_array_equal(preprocess(image, config), _torchvision_eval(image, config))


def test_preprocess_pads_like_torchvision_when_the_crop_is_larger():
    image = Image.fromarray(np.full((50, 70, 3), 200, np.uint8))
    config = Preprocess(60, 96, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")
    np.testing.assert_array_equal(preprocess(image, config), _torchvision_eval(image, config))


def _manifest(**overrides) -> EdgeManifest:
    fields = {"model_id": "m", "bitstream_version": 1,
              "preprocess": Preprocess(256, 224, (0.5,) * 3, (0.5,) * 3), "latent_channels": 48,
              "reduction": 8, "encoder_file": "encoder.onnx", "opset": 17}
    return EdgeManifest(**{**fields, **overrides})


def test_manifest_roundtrip_and_validation(tmp_path):
    (tmp_path / "encoder.onnx").write_bytes(b"graph")
    manifest = _manifest(files={"encoder.onnx": file_sha256(tmp_path / "encoder.onnx")})
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    assert manifest.latent_shape == (48, 28, 28)

    raw = json.loads((tmp_path / "manifest.json").read_text())
    for change, message in (({"extra": 1}, r"manifest.json: unknown keys \['extra'\]"),
                            ({"bundle_version": 99}, "bundle_version 99"),
                            ({"format": "zip"}, "format 'zip'")):
        (tmp_path / "manifest.json").write_text(json.dumps({**raw, **change}))
        with pytest.raises(ValueError, match=message):
            read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    (tmp_path / "encoder.onnx").write_bytes(b"other graph")
    with pytest.raises(ValueError, match="checksum mismatch"):
        read_manifest(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        read_manifest(tmp_path / "nowhere")


@pytest.mark.parametrize("bad", [{"resize": 0}, {"std": (0.5, 0.0, 0.5)},
                                 {"mean": (0.5, 0.5)}, {"interpolation": "lanczos"}])
def test_preprocess_config_validation(bad):
    fields = {"resize": 256, "crop": 224, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    with pytest.raises(ValueError, match="Preprocess"):
        Preprocess(**{**fields, **bad})


def test_batcher_groups_concurrent_items_and_isolates_failures():
    sizes: list[int] = []

    async def run_batch(items: list[int]) -> list[int | BaseException]:
        sizes.append(len(items))
        await asyncio.sleep(0.05)
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]

    async def scenario() -> list:
        batcher = Batcher(run_batch, max_batch=4, max_wait_s=0.02, max_queue=6)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in [1, 2, -3, 4, 5, 6]),
                                       return_exceptions=True)
        with pytest.raises(QueueFullError):
            await asyncio.gather(*(batcher.submit(i) for i in range(7)))
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert results[:2] == [10, 20] and results[3:] == [40, 50, 60]
    assert isinstance(results[2], ValueError)
    assert sizes[:2] == [4, 2]


def test_batcher_validates_settings():
    async def noop(items):
        return items

    for kwargs in ({"max_batch": 0}, {"max_wait_s": -1.0}, {"max_queue": 0}):
        with pytest.raises(ValueError):
            Batcher(noop, **kwargs)


def test_a_load_answer_is_right_only_with_its_own_probability_vector():
    from benchmarks.harness.loadgen import answer_matches

    reference = [0.5, 0.2, 0.15, 0.1, 0.05]
    top3 = [(0, 0.5), (1, 0.2), (2, 0.15)]
    assert answer_matches(top3, reference, 3)
    assert answer_matches([(0, 0.50004), (1, 0.2), (2, 0.15)], reference, 3)  # float32 noise
    assert not answer_matches(top3[:2], reference, 3)  # too few
    assert not answer_matches([(0, 0.5), (1, 0.2), (3, 0.1)], reference, 3)  # skips class 2
    assert not answer_matches([(0, 0.5), (2, 0.15), (1, 0.2)], reference, 3)  # out of order
    # the same top-1 with another vector: another packet's answer, wrong
    assert not answer_matches([(0, 0.6), (1, 0.2), (2, 0.1)], reference, 3)
    tie = [0.4, 0.3, 0.3 - 1e-7, 0.0]  # a near tie may come in either order
    assert answer_matches([(0, 0.4), (2, 0.3 - 1e-7), (1, 0.3)], tie, 3)
    assert answer_matches([(0, 0.4), (1, 0.3), (2, 0.3 - 1e-7)], tie, 3)
    assert not answer_matches([(0, 0.4), (0, 0.4), (1, 0.3)], tie, 3)  # a class twice
