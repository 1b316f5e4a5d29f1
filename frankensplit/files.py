"""Reading what is stored: the one file sha256, safetensors reader and strict plain data ->
dataclass loader that the zoo index, codec files, bundle manifests and training configs share.
Torch-free (the edge client and ``frankensplit --help`` import it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import types
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any

__all__ = ["file_sha256", "from_dict", "read_safetensors"]


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_safetensors(
    path: str | Path, what: str = "codec weights", parts: Collection[str] | None = None,
    tensors: bool = True, framework: str = "pt",
) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors (those under ``parts``, e.g. "g_a"; none without ``tensors``: the header
    alone) and the metadata of a safetensors file; ``what`` it holds names it in errors.

    Raises:
        ValueError: a missing file, or one safetensors cannot read (it raises several types).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} not found: {path}")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework=framework) as f:
            names = [k for k in f.keys() if parts is None or k.split(".", 1)[0] in parts]  # noqa: SIM118
            return ({k: f.get_tensor(k) for k in names} if tensors else {},
                    dict(f.metadata() or {}))
    except Exception as e:  # whatever a damaged file raises (several types): one named error
        raise ValueError(f"cannot read {what} {path}: {e}") from e


#: Floats in exponent notation without a dot (``1e-3``), which ``yaml.safe_load`` leaves as strings.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert a plain value to the annotated type, strictly (``TypeError`` when it does not fit)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except (TypeError, ValueError):
                continue
        names = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a))
                            for a in args)
        raise TypeError(f"{where}: expected {names}, got {value!r}")
    if origin is list:
        items = value if isinstance(value, list) else [value]  # a scalar is a one-item sweep
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(items)]
    if origin is tuple and isinstance(value, (list, tuple)):
        types_ = args[:1] * len(value) if args[1:] == (Ellipsis,) else args
        if len(types_) == len(value):
            return tuple(_convert(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(types_, value)))
    if origin is dict and isinstance(value, dict):
        return {_convert(args[0], k, where): _convert(args[1], v, f"{where}.{k}")
                for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise TypeError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a mapping, nested dataclasses included.

    Raises:
        ValueError: unknown keys (named, with the allowed ones).
        TypeError: not a mapping, a value of the wrong type, or missing required keys (named).
    """
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {', '.join(names)}")
    missing = [f.name for f in fields if f.name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise TypeError(f"{where}: missing keys {missing}")
    return cls(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()})
