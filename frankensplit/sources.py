"""Where a run's starting weights come from: a file, or a file as it was in a git commit.

A zoo model is the end of a chain of runs (first generation -> fine-tuned -> trained longer), and
the zoo keeps one file per id: each retrained model replaces its parent's weights. A config that
names the parent as ``runs/gen2/fs-lite0-l1.safetensors`` cannot be rerun from a clone until
someone extracts that file from history by hand. ``git:<commit>:<path>`` (``init_codec``,
``init_g_s``) names the parent as git stores it, so the command in ``frankensplit/zoo/index.json``
runs as written in any clone that has the commit (a shallow one may not: then the error says so).
The index also records each parent's sha256 (`source_sha256`), so a command whose parent has
since changed is caught instead of silently starting from other weights.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from frankensplit.files import file_sha256

__all__ = ["GIT_PREFIX", "git_ref", "local_weights", "source_sha256"]

#: Prefix of weights read from git history: ``git:<commit>:<path in the repository>``.
GIT_PREFIX = "git:"


def git_ref(source: str) -> tuple[str, str] | None:
    """``(commit, path)`` of a ``git:<commit>:<path>`` source; None for a plain file path.

    Raises:
        ValueError: a ``git:`` source without both parts, or an option-like commit.
    """
    if not source.startswith(GIT_PREFIX):
        return None
    rev, sep, path = source[len(GIT_PREFIX):].partition(":")
    if not (rev and sep and path):
        raise ValueError(f"weights {source!r}: expected git:<commit>:<path>")
    if rev.startswith("-"):
        raise ValueError(f"weights {source}: {rev!r} is not a commit")
    return rev, path


def _git_blob(source: str, cwd: Path) -> bytes:
    """The bytes of the ``git:<commit>:<path>`` source in the repository that holds ``cwd``."""
    ref = git_ref(source)
    if ref is None:
        raise ValueError(f"{source!r} is not a git:<commit>:<path> reference")
    rev, path = ref
    try:  # cat-file blob, not show: a folder is refused instead of printed as a listing
        r = subprocess.run(["git", "cat-file", "blob", f"{rev}:{path}"], cwd=cwd,
                           capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ValueError(f"weights {source}: cannot run git ({e})") from e
    if r.returncode != 0:
        why = (r.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        hint = ("run from inside the clone" if "not a git repository" in why else
                "a shallow clone lacks older commits: git fetch --unshallow")
        raise ValueError(f"weights {source}: git has no such file in "
                         f"{cwd.resolve()} ({why}); {hint}")
    return r.stdout


@contextmanager
def local_weights(source: str, cwd: str | Path = ".") -> Iterator[Path]:
    """A path to read the weights ``source`` names: the path itself, or for ``git:<commit>:
    <path>`` a temporary copy of that blob (removed on exit).

    Raises:
        ValueError: a malformed git reference, no git, or a commit or path git does not have.
    """
    if not source.startswith(GIT_PREFIX):
        yield Path(source)
        return
    data = _git_blob(source, Path(cwd))
    with tempfile.TemporaryDirectory(prefix="frankensplit-init-") as tmp:
        path = Path(tmp) / Path(source).name
        path.write_bytes(data)
        yield path


def source_sha256(source: str, cwd: str | Path = ".") -> str:
    """Hex sha256 of the bytes ``source`` names (a path relative to ``cwd``, or a ``git:<commit>:
    <path>`` blob of the clone holding ``cwd``): the hash ``index.json`` gives shipped weights.

    Raises:
        ValueError: a missing file, a malformed git reference, no git, or a commit or path git
            does not have.
    """
    if source.startswith(GIT_PREFIX):
        return hashlib.sha256(_git_blob(source, Path(cwd))).hexdigest()
    path = Path(cwd) / source
    if not path.is_file():
        raise ValueError(f"weights not found: {path}")
    return file_sha256(path)
