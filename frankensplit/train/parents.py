"""The weights a zoo entry's training command starts from (its parents).

Each zoo index entry records the command that trained it (``<config.yaml> [--set key=value ...]``)
and, per parent (`frankensplit.models.zoo_index.PARENT_KEYS`), the sha256 of the file it started
from; the reproduction test and ``tools/ship_model.py`` read the parents here. It lives with
training, above the config schema, so that the zoo index (``models``) needs no config.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from frankensplit.config import load_config

__all__ = ["command_parents"]


def command_parents(command: str, root: str | Path) -> dict[str, str]:
    """The weights an entry's ``config`` command starts from, by config key: ``init_codec``, and
    ``init_g_s`` where it names a file (``true`` takes ``init_codec``'s g_s). Each is a path
    relative to ``root`` (the repository) or ``git:<commit>:<path>``.

    Raises:
        ValueError: not ``<config.yaml> [--set key=value ...]``, or a config that does not load.
        TypeError: a config value of the wrong type.
    """
    path, *rest = shlex.split(command) or [""]
    if not path or len(rest) % 2 or rest[::2] != ["--set"] * (len(rest) // 2):
        raise ValueError(f"config command {command!r}: expected <config.yaml> [--set key=value ...]")
    cfg = load_config(Path(root) / path, rest[1::2])
    sources = {"init_codec": cfg.init_codec,
               "init_g_s": cfg.init_g_s if isinstance(cfg.init_g_s, str) else None}
    return {key: source for key, source in sources.items() if source}
