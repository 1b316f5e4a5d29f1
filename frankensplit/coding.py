"""Torch-free rANS coding of a factorized-prior latent, byte-identical to compressai's.

The coding layer sits below both its users: `frankensplit.models.entropy` pads payloads with it,
and the edge client, the server's sandboxed decoder and the service code with it
(`frankensplit.runtime`). It imports only numpy and compressai's compiled coder.

compressai's ``EntropyBottleneck.compress`` does, per image::

    symbols = round(y - medians).int()            # round half to even, in float32
    indexes = channel index of every element      # one CDF per channel
    bytes   = RansEncoder().encode_with_indexes(symbols, indexes, quantized_cdf, cdf_length, offset)

(all flattened in C, H, W order). `FactorizedCoder` does exactly that with numpy, calling the same
C++ rANS coder, so its bytes equal the torch path's for the same y. One rate of a variable-rate
model (`frankensplit.models.entropy.GainedFactorizedPrior`) is the same coder with that rate's
tables and gain vectors: ``symbols = round(y * gain - medians)`` and ``y_hat = (symbols + medians)
* inverse_gain``, every step in float32 as torch computes it.

The coder is compressai's compiled extension ``compressai/ans*.so``. Importing the ``compressai``
package would import torch, so `load_ans` loads the extension file directly. It registers it as
``compressai.ans`` because pybind11 refuses to initialise the same extension twice: a process that
later imports compressai (the server, a test) then reuses this module instead of crashing.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

__all__ = ["CoderUnavailableError", "FactorizedCoder", "load_ans", "pad_payload"]

_MODULE_NAME = "compressai.ans"


class CoderUnavailableError(ImportError):
    """compressai's compiled rANS extension cannot be found (install ``compressai``)."""


def _find_extension() -> Path:
    spec = importlib.util.find_spec("compressai")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise CoderUnavailableError(
            "the edge client needs compressai's rANS extension: pip install compressai"
        )
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"ans{suffix}"
            if path.is_file():
                return path
    raise CoderUnavailableError(
        f"compressai is installed at {list(spec.submodule_search_locations)} but has no compiled "
        "'ans' extension; reinstall compressai"
    )


def load_ans() -> ModuleType:
    """compressai's rANS extension module (``RansEncoder``, ``RansDecoder``), without torch.

    Raises:
        CoderUnavailableError: compressai or its compiled extension is not installed.
    """
    module = sys.modules.get(_MODULE_NAME)
    if module is not None:
        return module
    path = _find_extension()
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise CoderUnavailableError(f"cannot load the rANS extension {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[_MODULE_NAME] = module
    return module


def pad_payload(payload: bytes, symbols: int) -> bytes:
    """``payload`` + more zero bytes than compressai's unchecked rANS decoder can read for
    ``symbols`` (it crashed past short payloads); never decoded. The one padding rule: the
    in-process decoder (``models/entropy.py``) and the sandboxed one both call it."""
    return bytes(payload) + bytes(8 + 16 * symbols)


def _int_table(name: str, table: np.ndarray, ndim: int) -> np.ndarray:
    table = np.asarray(table)
    if table.ndim != ndim or not np.issubdtype(table.dtype, np.integer):
        raise ValueError(f"{name} must be a {ndim}-D integer array, got {table.dtype} {table.shape}")
    return table.astype(np.int64)


class FactorizedCoder:
    """Encode/decode one latent (C, H, W) with a factorized prior's integer tables.

    Args:
        quantized_cdf: (C, L) int, one zero-padded quantized CDF per channel.
        cdf_length: (C,) int, valid length of each CDF.
        offset: (C,) int, symbol value of each CDF's first entry.
        medians: (C,) float, the per-channel rounding centres.
        gain: (C,) float, one rate's gain of a variable-rate model (None: a fixed-rate model's
            coder, no scaling).
        inverse_gain: (C,) float, that rate's inverse gain, applied to decoded latents; given
            with ``gain``.

    Raises:
        ValueError: tables of inconsistent shapes or types, or one gain vector without the other.
    """

    def __init__(
        self,
        quantized_cdf: np.ndarray,
        cdf_length: np.ndarray,
        offset: np.ndarray,
        medians: np.ndarray,
        gain: np.ndarray | None = None,
        inverse_gain: np.ndarray | None = None,
    ) -> None:
        cdf = _int_table("quantized_cdf", quantized_cdf, 2)
        length = _int_table("cdf_length", cdf_length, 1)
        off = _int_table("offset", offset, 1)
        medians = np.asarray(medians, dtype=np.float32)
        channels = cdf.shape[0]
        if (gain is None) != (inverse_gain is None):
            raise ValueError("gain and inverse_gain go together (one rate of a variable-rate "
                             "model), or neither (a fixed-rate model)")
        gains = [] if gain is None else [np.asarray(g, dtype=np.float32)
                                         for g in (gain, inverse_gain)]
        if length.shape != (channels,) or off.shape != (channels,) or medians.shape != (channels,) \
                or any(g.shape != (channels,) for g in gains):
            raise ValueError(
                f"tables disagree on the channel count: quantized_cdf {cdf.shape}, cdf_length "
                f"{length.shape}, offset {off.shape}, medians {medians.shape}, gains "
                f"{[g.shape for g in gains]}"
            )
        self.gain, self.inverse_gain = gains or (None, None)
        if length.min() < 2 or length.max() > cdf.shape[1]:
            raise ValueError(f"cdf_length must be in 2..{cdf.shape[1]}, got {length.tolist()}")
        self.channels = channels
        self.medians = medians
        # The C++ coder takes Python lists; convert once, not per image.
        self._cdf = cdf.tolist()
        self._length = length.tolist()
        self._offset = off.tolist()
        self._indexes: dict[tuple[int, int], list[int]] = {}
        self._ans = load_ans()

    def _indexes_for(self, height: int, width: int) -> list[int]:
        key = (height, width)
        if key not in self._indexes:
            self._indexes[key] = np.repeat(np.arange(self.channels), height * width).tolist()
        return self._indexes[key]

    def _check_latent(self, y: np.ndarray) -> None:
        if y.ndim != 3 or y.shape[0] != self.channels:
            raise ValueError(f"expected a latent ({self.channels}, H, W), got {y.shape}")

    def symbols(self, y: np.ndarray) -> np.ndarray:
        """``round(y * gain - medians)`` as int32 (C, H, W) (no gain: ``round(y - medians)``),
        in float32 and rounding half to even like ``torch.round``."""
        y = np.asarray(y, dtype=np.float32)
        self._check_latent(y)
        if self.gain is not None:
            y = y * self.gain[:, None, None]  # float32, as the torch edge scales y
        return np.rint(y - self.medians[:, None, None]).astype(np.int32)

    def encode_symbols(self, symbols: np.ndarray) -> bytes:
        """rANS-code integer symbols (C, H, W) into bytes."""
        self._check_latent(symbols)
        _, height, width = symbols.shape
        return self._ans.RansEncoder().encode_with_indexes(
            symbols.reshape(-1).tolist(), self._indexes_for(height, width),
            self._cdf, self._length, self._offset,
        )

    def encode(self, y: np.ndarray) -> bytes:
        """Quantize and rANS-code one latent y (C, H, W)."""
        return self.encode_symbols(self.symbols(y))

    def decode_symbols(self, payload: bytes, size: tuple[int, int]) -> np.ndarray:
        """rANS-decode ``payload`` (padded by `pad_payload`) into int32 symbols (C, H, W).

        Only for payloads this process produced or trusts: a forged payload can still keep the
        compiled decoder busy for long (see ``runtime/server/sandbox.py``, which runs this for servers).
        """
        height, width = size
        values = self._ans.RansDecoder().decode_with_indexes(
            pad_payload(payload, self.channels * height * width),
            self._indexes_for(height, width), self._cdf, self._length, self._offset,
        )
        return np.asarray(values, dtype=np.int32).reshape(self.channels, height, width)

    def dequantize(self, symbols: np.ndarray) -> np.ndarray:
        """``symbols + medians`` (times ``inverse_gain`` at a rate) as float32 (C, H, W): y_hat,
        as the torch decoder returns it."""
        y_hat = symbols.astype(np.float32) + self.medians[:, None, None]
        return y_hat if self.inverse_gain is None else y_hat * self.inverse_gain[:, None, None]
