"""Lazy package exports (PEP 562): a package's public names import their module on first use.

A module imports its package first (``frankensplit.train.loop`` runs
``frankensplit/train/__init__.py``), and ``frankensplit --help`` imports every command module, so
eager re-exports in a package ``__init__`` would pull torch, compressai and timm into every start.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]) -> None:
    """Make ``package``'s public names import their module on first use.

    The package module's class becomes a subclass of ``ModuleType`` with ``__getattr__`` (as
    PEP 562's module ``__getattr__``) and a ``__setattr__`` that keeps exports over submodules.

    Args:
        package: the package's ``__name__``.
        exports: ``{module: names}``, as the ``from module import names`` lines they replace.
    """
    source = {name: module for module, names in exports.items() for name in names}

    class LazyPackage(ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name not in source:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            value = getattr(importlib.import_module(source[name]), name)
            super().__setattr__(name, value)
            return value

        def __dir__(self) -> list[str]:
            return sorted({*self.__dict__, *source})

        def __setattr__(self, name: str, value: Any) -> None:
            # Importing a submodule binds its name in the package: where the package exports
            # another object of that name (``eval.aggregate``, the function), the export wins,
            # as after the eager ``from frankensplit.eval.aggregate import aggregate``.
            submodule = isinstance(value, ModuleType) and value.__name__ == f"{package}.{name}"
            if submodule and name in source:
                value = getattr(importlib.import_module(source[name]), name)
            super().__setattr__(name, value)

    sys.modules[package].__class__ = LazyPackage
