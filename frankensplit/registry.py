"""One generic registry, shared by encoders, entropy models, blueprint decoders, codecs and the zoo.

A new component is one decorated factory, a function or a class::

    @ENCODERS.register("frankensplit")
    class FrankenSplitEncoder(nn.Sequential): ...

and is then reachable by name everywhere (CLI, configs, tests parametrized over ``names()``).
Names are explicit strings chosen by the author: an id never depends on import or dict order.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name no entry is registered under.

    Attributes:
        kind: the registry's kind ("model id", "codec", ...).
        name: the name asked for.
        known: the registered names, sorted.
        matches: registered names close to ``name`` (``difflib``), best first; may be empty.
    """

    def __init__(self, kind: str, name: object, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, known
        self.matches = difflib.get_close_matches(name, known, n=3) if isinstance(name, str) else []
        hint = f" (did you mean {self.matches[0]!r}?)" if self.matches else ""
        super().__init__(f"unknown {kind} {name!r}{hint}; known: {', '.join(known) or '(none)'}")

    def __reduce__(self):  # pickles (worker processes) with its own arguments, not the message
        return type(self), (self.kind, self.name, self.known)


class Registry(Generic[T]):
    """A name -> factory mapping with helpful errors.

    Args:
        kind: what the registry holds, used in error messages ("encoder", "blueprint", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name is an error."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            UnknownNameError: (a ValueError) unknown name; the message suggests close names and
                lists the known ones.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
