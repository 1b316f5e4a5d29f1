"""ONNX Runtime sessions of the runtime's graphs, made one way: the edge client's g_a and the
ONNX server half's g_s + tail (torch-free; onnxruntime is imported when a session is made)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["onnx_session"]


def onnx_session(path: str | Path, threads: int | None, spin: bool = True) -> Any:
    """An ``onnxruntime.InferenceSession`` of the graph at ``path`` on the CPU.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (None: onnxruntime's default, one per core); one inter-op.
        spin: let the intra-op threads spin after a run, waiting for the next (faster
            back-to-back runs; off where other work takes turns on the same cores).

    Raises:
        ValueError: ``threads`` below 1.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
