"""The codecs of CompressAI's published weights (``compressai-ARCH:PATH``), without a download.

Each test writes a checkpoint in the published format itself: compressai's own architecture at
quality 1 with seeded random weights, its state dict saved by ``torch.save`` under the published
file-name pattern with the first 8 hex digits of the file's own sha256, verified against a table
of URLs passed in place of compressai.zoo's (the real table is exercised by the refusals).
Invariants: the decoded picture equals compressai's own compress -> decompress, cropped back; the
packet carries exactly compressai's strings; a renamed, wrong, truncated or foreign file gets one
clear ValueError naming the file and the URL to download.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from compressai.ops import compute_padding
from compressai.zoo import image_models
from compressai.zoo.image import model_architectures, model_urls
from PIL import Image
from torchvision.transforms.functional import to_tensor

from frankensplit import bitstream
from frankensplit.codecs import CodecUnavailableError, ImageCodec, create_codec, measure
from frankensplit.codecs.compressai_zoo import ARCHITECTURES, PublishedImageCodec
from frankensplit.eval.report import _label
from frankensplit.threads import seeded

ARCHS = sorted(ARCHITECTURES)
MIRROR = "https://mirror.invalid/compressai"


pytestmark = pytest.mark.usefixtures("one_thread")


def _published(arch: str, quality: int = 1) -> str:
    """CompressAI's published file name of ``arch`` (MSE) at ``quality``."""
    return model_urls[arch]["mse"][quality].rsplit("/", 1)[-1]


def _state_bytes(arch: str, quality: int = 1, seed: int = 0, update: bool = True) -> bytes:
    with seeded(seed):
        model = image_models[arch](quality=quality)  # compressai's class at that quality's N, M
    if update:
        model.update()  # the published files carry their CDF tables
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def _write(folder: Path, arch: str, data: bytes, quality: int = 1,
           prefix: str | None = None) -> tuple[Path, dict[int, str]]:
    """``data`` under the published name pattern of ``arch`` at ``quality`` with the sha256
    prefix of ``data`` (or ``prefix``); returns the file and the URL table naming it."""
    stem = _published(arch, quality).rsplit("-", 2)[0]  # "bmshj2018-factorized-prior"
    sha = prefix or hashlib.sha256(data).hexdigest()[:8]
    path = folder / f"{stem}-{quality}-{sha}.pth.tar"
    path.write_bytes(data)
    return path, {quality: f"{MIRROR}/{path.name}"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, tuple[Path, dict[int, str]]]:
    """arch -> (checkpoint at quality 1, its URL table), each in a folder of its own."""
    out = {}
    for arch in ARCHS:
        folder = tmp_path_factory.mktemp(arch)
        out[arch] = _write(folder, arch, _state_bytes(arch))
    return out


def _image(w: int = 70, h: int = 50) -> Image.Image:
    """Ramps and a square, not a multiple of 64 on either side (so padding is exercised)."""
    yy, xx = np.mgrid[0:h, 0:w]
    x = np.stack([xx * 255 / w, yy * 255 / h, 128 + 100 * np.sin(xx / 5.0)], axis=-1)
    x[h // 4 : h // 2, w // 4 : w // 2] = (230, 20, 40)
    return Image.fromarray(x.astype(np.uint8))


def _reference(path: Path, arch: str, img: Image.Image) -> tuple[list[bytes], np.ndarray]:
    """compressai's own strings and decoded picture, as its eval_model pads and crops."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = model_architectures[arch].from_state_dict(state).eval()
    x = to_tensor(img)[None]  # (1, 3, H, W)
    pad, unpad = compute_padding(img.height, img.width, min_div=64)
    with torch.no_grad():
        out = model.compress(F.pad(x, pad, mode="constant", value=0))
        x_hat = model.decompress(out["strings"], out["shape"])["x_hat"]  # (1, 3, H', W')
    x_hat = F.pad(x_hat, unpad)[0].clamp(0, 1)  # (3, H, W)
    return [s[0] for s in out["strings"]], (x_hat.permute(1, 2, 0) * 255).round().byte().numpy()


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_equals_compressai(arch: str, checkpoints) -> None:
    path, urls = checkpoints[arch]
    codec = create_codec(f"compressai-{arch}:{path}", urls=urls)
    assert isinstance(codec, ImageCodec) and isinstance(codec, PublishedImageCodec)
    assert codec.name == f"compressai-{arch}" and codec.qualities == (1,)
    img = _image()
    data = codec.encode(img, 1)
    x_hat = codec.decode(data)
    strings, expected = _reference(path, arch, img)
    assert x_hat.size == img.size and x_hat.mode == "RGB"
    assert np.array_equal(np.asarray(x_hat), expected)
    # Real bytes: the packet is the header plus compressai's strings, their lengths and the padding.
    packet = bitstream.unpack(data)
    assert packet.model_id == f"{arch}-q1" and len(strings) == ARCHITECTURES[arch].streams
    assert packet.payload[:2] == bytes([64 - img.height, 128 - img.width])  # 50x70 -> 64x128
    assert packet.payload.endswith(b"".join(strings))
    assert len(packet.payload) == 2 + (len(strings) - 1) + sum(map(len, strings))  # 1-byte lengths
    assert len(data) == bitstream.header_size(packet.model_id, len(packet.payload)) + len(packet.payload)
    assert codec.encode(img, 1) == data  # deterministic
    assert 0 < codec.estimated_bits(img, 1) < 8 * len(packet.payload) + 64


def test_folder_is_a_sweep_and_checkpoints_without_tables_load(tmp_path: Path) -> None:
    arch = "bmshj2018-factorized"
    one, urls = _write(tmp_path, arch, _state_bytes(arch, 1, update=False))
    _, urls2 = _write(tmp_path, arch, _state_bytes(arch, 2, seed=1), quality=2)
    _write(tmp_path, "bmshj2018-hyperprior", b"another architecture's file: ignored")
    codec = create_codec(f"compressai-{arch}:{tmp_path}", urls={**urls, **urls2})
    assert codec.qualities == (1, 2) and codec.quality_range == (1, 2)
    img = _image(64, 64)
    coded = measure(codec, [img], 1)[0]  # quality 1 had no CDF tables: update() built them
    assert coded.x_hat.size == img.size and coded.num_bytes > 30
    assert codec.decode(codec.encode(img, 2)).size == img.size
    with pytest.raises(ValueError, match="whole number"):
        codec.encode(img, 1.5)
    only_one = create_codec(f"compressai-{arch}:{one}", urls=urls)
    with pytest.raises(ValueError, match=r"packet for model 'bmshj2018-factorized-q2'"):
        only_one.decode(codec.encode(img, 2))


def test_labels_say_whose_weights() -> None:
    assert _label("compressai-bmshj2018-hyperprior") == \
        "Balle 2018 hyperprior (MSE, CompressAI weights)"
    assert all("CompressAI weights" in _label(a.codec) for a in ARCHITECTURES.values())
    assert "ours, CPU-trained" in _label("bmshj2018-factorized")


# Refusals: each a ValueError naming the file, what was expected and where to download it.


def test_no_source_names_the_download() -> None:
    url = model_urls["bmshj2018-hyperprior"]["mse"][1]
    with pytest.raises(CodecUnavailableError, match=rf"compressai-bmshj2018-hyperprior:PATH.*{url}"):
        create_codec("compressai-bmshj2018-hyperprior")


def test_content_against_the_published_checksum(tmp_path: Path) -> None:
    """Our random weights under the real published name: compressai.zoo's table refuses them."""
    path = tmp_path / _published("bmshj2018-factorized", 1)
    path.write_bytes(_state_bytes("bmshj2018-factorized"))
    url = model_urls["bmshj2018-factorized"]["mse"][1]
    with pytest.raises(ValueError, match=rf"{path}: sha256 begins .*446d5c7f.*{url}"):
        create_codec(f"compressai-bmshj2018-factorized:{path}")


def test_wrong_prefix_and_truncated(tmp_path: Path, checkpoints) -> None:
    data = checkpoints["bmshj2018-factorized"][0].read_bytes()
    wrong, urls = _write(tmp_path, "bmshj2018-factorized", data, prefix="0badc0de")
    with pytest.raises(ValueError, match=rf"{wrong}: sha256 begins .* begins 0badc0de.*{MIRROR}"):
        create_codec(f"compressai-bmshj2018-factorized:{wrong}", urls=urls)
    cut, urls = _write(tmp_path, "bmshj2018-factorized", data)
    cut.write_bytes(data[: len(data) // 2])  # an interrupted download under the right name
    with pytest.raises(ValueError, match="corrupt or incomplete; download it again from"):
        create_codec(f"compressai-bmshj2018-factorized:{cut}", urls=urls)


def test_renamed_or_foreign_file_names(tmp_path: Path) -> None:
    renamed = tmp_path / "hyperprior.pth.tar"
    renamed.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"hyperprior.pth.tar: not the published name .*"
                                         r"bmshj2018-hyperprior-1-7eb97409.pth.tar"):
        create_codec(f"compressai-bmshj2018-hyperprior:{renamed}")
    other = tmp_path / _published("mbt2018-mean", 3)
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"CompressAI's mbt2018-mean \(mse\) checkpoint at "
                                         r"quality 3, not bmshj2018-hyperprior.*use "
                                         r"compressai-mbt2018-mean:"):
        create_codec(f"compressai-bmshj2018-hyperprior:{other}")
    ssim = tmp_path / model_urls["bmshj2018-hyperprior"]["ms-ssim"][2].rsplit("/", 1)[-1]
    ssim.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\(ms-ssim\) checkpoint .* optimised for mse"):
        create_codec(f"compressai-bmshj2018-hyperprior:{ssim}")


def test_wrong_architecture_or_no_state_dict(tmp_path: Path, checkpoints) -> None:
    """Correctly named and checksummed files that hold something else."""
    data = checkpoints["bmshj2018-hyperprior"][0].read_bytes()
    path, urls = _write(tmp_path, "bmshj2018-factorized", data)
    with pytest.raises(ValueError, match=rf"{path} does not hold a CompressAI bmshj2018-factorized "
                                         rf"state dict .*{MIRROR}"):
        create_codec(f"compressai-bmshj2018-factorized:{path}", urls=urls)
    junk, urls = _write(tmp_path, "bmshj2018-factorized", b"not a checkpoint at all")
    with pytest.raises(ValueError, match=rf"{junk} does not hold"):
        create_codec(f"compressai-bmshj2018-factorized:{junk}", urls=urls)


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such checkpoint file or folder"):
        create_codec(f"compressai-mbt2018-mean:{tmp_path / 'absent'}")
    with pytest.raises(ValueError, match=r"holds none of CompressAI's mbt2018-mean .*"
                                         r"mbt2018-mean-1-e522738d.pth.tar"):
        create_codec(f"compressai-mbt2018-mean:{tmp_path}")


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda d: d[: len(d) // 2], id="truncated"),
        pytest.param(lambda d: b"\x00" * 64, id="zeros"),
        pytest.param(lambda d: b"", id="empty"),
        pytest.param(lambda d: create_codec("jpeg").encode(_image(), 50), id="jpeg"),
    ],
)
def test_corrupt_data(corrupt, checkpoints) -> None:
    path, urls = checkpoints["bmshj2018-hyperprior"]
    codec = create_codec(f"compressai-bmshj2018-hyperprior:{path}", urls=urls)
    with pytest.raises(ValueError, match="compressai-bmshj2018-hyperprior"):
        codec.decode(corrupt(codec.encode(_image(), 1)))


def test_forged_packets(checkpoints) -> None:
    """CRC-valid packets whose fields do not describe a coded image are refused, not decoded."""
    path, urls = checkpoints["bmshj2018-hyperprior"]
    codec = create_codec(f"compressai-bmshj2018-hyperprior:{path}", urls=urls)
    packet = bitstream.unpack(codec.encode(_image(), 1))

    def forged(**fields) -> bytes:
        return bitstream.pack(bitstream.Packet(**{**packet.__dict__, **fields}))

    for data, message in [
        (forged(payload=bytes([64, 0]) + packet.payload[2:]), "padding"),
        (forged(payload=packet.payload[:1]), "too short"),
        (forged(payload=packet.payload[:2] + b"\xff\x7f"), "exceed the payload"),
        (forged(shape=(7, *packet.shape[1:])), "does not fit"),
    ]:
        with pytest.raises(ValueError, match=message):
            codec.decode(data)


def test_bad_inputs(checkpoints) -> None:
    path, urls = checkpoints["bmshj2018-factorized"]
    codec = create_codec(f"compressai-bmshj2018-factorized:{path}", urls=urls)
    with pytest.raises(ValueError, match="compressai-bmshj2018-factorized quality 2 is out of range"):
        codec.encode(_image(), 2)
    with pytest.raises(TypeError, match="quality must be a number"):
        codec.encode(_image(), "high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RGB"):
        codec.encode(_image().convert("L"), 1)
    with pytest.raises(TypeError, match="bytes"):
        codec.decode("abc")  # type: ignore[arg-type]
