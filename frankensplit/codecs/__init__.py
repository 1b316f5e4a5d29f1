"""Standard image codecs behind one interface: ``encode(x, quality) -> bytes``, ``decode -> x_hat``.

These are the baselines of the rate-accuracy comparison: each compresses exactly the crop the
teacher sees and the unmodified teacher classifies the decoded image. Registered codecs:

- ``jpeg``: Pillow / libjpeg-turbo, quality 5..90.
- ``webp``: Pillow / libwebp, method 4, quality 5..90.
- ``avif``: Pillow / libavif, speed 6, quality 5..90.
- ``jxl``: imagecodecs / libjxl, effort 7; the sweep value is the butteraugli *distance*
  (12 .. 0.5, lower = better).
- ``hevc``: HEVC-intra (HEIC) through the optional GPL package ``pillow-heif``.
- ``bmshj2018-factorized:SOURCE``: the learned image codec baseline (Balle et al. 2018 factorized
  prior, MSE), trained by ``frankensplit train`` with ``objective: image``; the sweep is over the
  trained lambdas. It needs its weights, so it is never among the defaults. Ours, trained on
  CPU for a few thousand steps: far below CompressAI's published rate-distortion curve.
- ``compressai-bmshj2018-factorized:PATH``, ``compressai-bmshj2018-hyperprior:PATH``,
  ``compressai-mbt2018-mean:PATH``, ``compressai-cheng2020-anchor:PATH``: CompressAI's published
  pretrained (MSE) checkpoints, downloaded by the user, checksum-verified and run through
  compressai's own classes; the sweep is CompressAI's quality index of the files found
  (:mod:`frankensplit.codecs.compressai_zoo`).

Example::

    codec = create_codec("webp")
    for q in codec.qualities:
        coded = measure(codec, crops, q)
"""

from frankensplit.codecs.base import (
    CODECS,
    DEFAULT_CODECS,
    CodecUnavailableError,
    EstimatesBits,
    ImageCodec,
    available_codecs,
    create_codec,
    parse_codecs,
    parse_qualities,
)
from frankensplit.codecs.compressai_zoo import PublishedImageCodec
from frankensplit.codecs.jxl import JpegXLCodec
from frankensplit.codecs.learned import LearnedImageCodec, load_image_codec
from frankensplit.codecs.measure import (
    Coded,
    TimedCoded,
    bpp,
    encode_decode_timed,
    measure,
    psnr,
)
from frankensplit.codecs.pillow import PillowCodec

__all__ = [
    "CODECS",
    "DEFAULT_CODECS",
    "CodecUnavailableError",
    "Coded",
    "EstimatesBits",
    "ImageCodec",
    "JpegXLCodec",
    "LearnedImageCodec",
    "PillowCodec",
    "PublishedImageCodec",
    "TimedCoded",
    "available_codecs",
    "bpp",
    "create_codec",
    "encode_decode_timed",
    "load_image_codec",
    "measure",
    "parse_codecs",
    "parse_qualities",
    "psnr",
]
