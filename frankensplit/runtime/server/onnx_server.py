"""The server half as ONNX: the packet path of `ServerPart` without torch (``serve --onnx``).

```
packet --Accepts.check (id, exact latent shape, rate, limits)--> coder (rANS from the stored
       integer tables; sandboxed or in process) --> y_hat (C, h, w) float32 [* inverse gain]
       --onnxruntime: g_s + tail (classifier.onnx, dynamic batch)--> logits (N, classes)
```

`OnnxServerPart` keeps `ServerPart`'s contract (`runtime.server.loading.ServingPart`), so the app,
its service, routing, batching and the decoder sandbox run it unchanged; the packet checks are the
same object's (`frankensplit.accepts.Accepts`). What it does not hold is the teacher's head, so a
server of ONNX halves classifies packets only (``/v1/classify-image`` answers why).

Decoding stays exact: the bundle stores the integer CDF tables the edge codes with (the edge
bundle's files, `runtime.edge.bundle.rate_table_file`), the symbols are decoded by compressai's
compiled rANS extension loaded without torch (`frankensplit.coding`), and dequantised in float32
as torch does; a variable-rate model's inverse gain is applied there, in numpy, from its stored
array, so one graph serves every rate. The graph's logits equal torch's within float32 reordering
(checked at export).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from frankensplit import bitstream
from frankensplit.accepts import Accepts, AcceptsPackets
from frankensplit.coding import FactorizedCoder
from frankensplit.runtime.edge.bundle import (
    GAIN_NAMES,
    TABLE_NAMES,
    OnnxServerManifest,
    ServerManifest,
    rate_table_file,
    read_manifest,
)
from frankensplit.runtime.server.loading import LoadedModel
from frankensplit.runtime.sessions import onnx_session

__all__ = ["OnnxServerPart", "TableCoder", "load_onnx_server_model"]


class TableCoder:
    """Entropy-decode checked packets in this process from integer tables (`FactorizedCoder`
    per rate), packet by packet so that a bad packet fails alone; the ONNX part's coder for
    trusted senders (``--no-isolate-decoder``), as `frankensplit.models.parts.InProcessCoder`
    is the torch part's.

    Args:
        tables: rate index (None: the fixed rate) -> ``TABLE_NAMES`` arrays (and gain vectors).
    """

    def __init__(self, tables: Mapping[int | None, Mapping[str, np.ndarray]]) -> None:
        self._coders = {rate: FactorizedCoder(**t) for rate, t in tables.items()}

    def decode(self, packets: Sequence[bitstream.Packet]) -> list[Any]:
        """y_hat (C, h, w) float32 per packet, or its `bitstream.CorruptError`."""
        out: list[Any] = []
        for packet in packets:
            coder = self._coders[packet.rate]
            try:
                out.append(coder.dequantize(coder.decode_symbols(packet.payload, packet.shape[1:])))
            except (RuntimeError, ValueError, IndexError) as e:
                out.append(bitstream.CorruptError(f"entropy decoding failed: {e}"))
        return out


class OnnxServerPart(AcceptsPackets):
    """Packets -> logits with ONNX Runtime and numpy (`ServerPart`'s server path; the checks,
    their properties, the copies and `decode_batch` come from
    `frankensplit.accepts.AcceptsPackets`, as there).

    Args:
        model_id: the decoder's id.
        session: an ``onnxruntime.InferenceSession`` of the classifier graph (``y_hat`` ->
            ``logits``).
        tables: rate index (None: the fixed rate) -> its coding tables (`TableCoder`).
        encoder_id: the id its packets carry (None: ``model_id``).
        latent_shape: the one latent shape it accepts (None: any within ``limits``).
        limits: wire-format limits (None: `Accepts`'s default).
        coder: how packets are entropy-decoded (None: `TableCoder`; a server facing untrusted
            senders: `runtime.server.sandbox.SandboxCoder`).
    """

    def __init__(
        self,
        model_id: str,
        session: Any,
        tables: Mapping[int | None, Mapping[str, np.ndarray]],
        encoder_id: str | None = None,
        latent_shape: tuple[int, int, int] | None = None,
        limits: bitstream.Limits | None = None,
        coder: Any = None,
    ) -> None:
        self.model_id = model_id
        self.session = session
        self._tables = {r: {n: np.asarray(a) for n, a in t.items()} for r, t in tables.items()}
        channels = int(next(iter(self._tables.values()))["quantized_cdf"].shape[0])
        rates = None if list(self._tables) == [None] else len(self._tables)
        self.accepts = Accepts(model_id, encoder_id or model_id, channels, rates, latent_shape,
                               limits)
        self.coder = TableCoder(self._tables) if coder is None else coder
        self._input = session.get_inputs()[0].name

    def _args(self) -> tuple[Any, ...]:
        return self.model_id, self.session, self._tables

    def coding_tables(self) -> dict[int | None, dict[str, np.ndarray]]:
        """The integer rANS tables, medians (and gain vectors) per rate index (the sandbox's)."""
        return {r: dict(t) for r, t in self._tables.items()}

    def entropy_state(self) -> dict[str, np.ndarray]:
        """Its coding tables, flat: what decoders of one encoder must hold alike."""
        return {f"{r}.{n}": a for r, t in self._tables.items() for n, a in t.items()}

    def decode_each(self, packets: Sequence[bitstream.Packet]) -> list[Any]:
        """Checked packets -> y_hat (C, h, w) float32 each through the coder, or the error of a
        packet that could not be decoded."""
        return self.coder.decode(packets)

    def classify(self, y_hat: np.ndarray) -> np.ndarray:
        """Decoded latents y_hat (N, C, h, w) -> logits (N, num_classes): g_s, then the tail."""
        return self.session.run(None, {self._input: np.asarray(y_hat, dtype=np.float32)})[0]

    def decode(self, packets: Sequence[bytes | bitstream.Packet]) -> np.ndarray:
        """Packets (bytes, or packets unpacked already) of one latent shape -> logits
        (N, num_classes).

        Raises:
            bitstream.BitstreamError: the first packet that does not fit or does not decode.
            ValueError: packets of several latent shapes.
        """
        return self.classify(np.stack(self.decode_batch(packets)))  # y_hat (N, C, h, w)


def load_onnx_server_model(folder: str | Path, threads: int | None = None) -> LoadedModel:
    """Load an ONNX server half (``frankensplit export --server-onnx``) for serving.

    Args:
        folder: its ``server-onnx/`` folder (checksums are verified).
        threads: ONNX Runtime intra-op threads (None: its default, one per core).

    Raises:
        ValueError: not an ONNX server half (a torch server bundle says how to export one), a bad
            bundle, or a graph that does not take the manifest's latent shape.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if not isinstance(manifest, OnnxServerManifest):  # a folder of another kind: bad content
        what = "the torch server bundle" if isinstance(manifest, ServerManifest) else "an edge bundle"
        raise ValueError(  # noqa: TRY004
            f"{folder} is {what}; --onnx serves the ONNX server half, which `frankensplit export "
            "--server-onnx` writes into server-onnx/")
    tables = {rate: {name: np.load(folder / rate_table_file(name, rate), allow_pickle=False)
                     for name in (*TABLE_NAMES, *(GAIN_NAMES if rate is not None else ()))}
              for rate in manifest.rate_indexes}
    session = onnx_session(folder / manifest.classifier_file, threads)
    declared = session.get_inputs()[0].shape  # ["batch", C, h, w]
    if list(declared[1:]) != list(manifest.latent_shape):
        raise ValueError(f"{folder}: the graph takes latents {declared[1:]}, the manifest says "
                         f"{list(manifest.latent_shape)}")
    names = None
    if manifest.class_names_file is not None:
        names = tuple(json.loads((folder / manifest.class_names_file).read_text()))
    arch = manifest.architecture
    part = OnnxServerPart(manifest.model_id, session, tables, arch.reuses or manifest.model_id,
                          manifest.latent_shape)
    return LoadedModel(manifest.model_id, part, teacher=arch.teacher, rates=arch.rates,
                       default_rate=manifest.default_rate, class_names=names)
