"""The README tells the truth: its Python snippet runs, its layout names the tree, its links exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _block(lang: str, after: str) -> str:
    """The first fenced ``lang`` block after the heading ``after``."""
    section = README.split(f"## {after}\n", 1)[1]
    return re.search(rf"```{lang}\n(.*?)```", section, re.DOTALL).group(1)


def test_python_snippet_runs(tmp_path: Path) -> None:
    """In a fresh interpreter, as a reader would paste it (on a bundled photo)."""
    from frankensplit.data import bundled_photos

    photos = bundled_photos()
    if not photos:
        pytest.skip("no bundled photos (scikit-image) installed")
    script = tmp_path / "snippet.py"
    script.write_text(_block("python", "Using it").replace('"photo.jpg"', repr(str(photos[0]))))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=REPO,
                         check=False, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"\d+ bytes -> \[\d+\]\n", out.stdout), out.stdout


def test_layout_names_every_part_of_the_tree() -> None:
    layout = _block("", "Layout")
    git = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                         check=False)
    tracked = git.stdout.split()
    if git.returncode != 0 or not tracked:
        pytest.skip("not a git checkout (the layout is checked against `git ls-files`)")
    top = {p.split("/")[0] for p in tracked} - {"README.md", "LICENSE", "pyproject.toml",
                                                  ".gitignore", ".ci"}
    package = {p.split("/")[1] for p in tracked if p.startswith("frankensplit/")} - {
        "__init__.py", "py.typed"}
    missing = [n for n in sorted(top | package) if not re.search(
        rf"(^|[\s,]){re.escape(n)}(/|[\s,])", layout, re.MULTILINE)]
    assert not missing, f"README's layout section does not name {missing}"


def test_relative_links_exist() -> None:
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    assert links
    assert [link for link in links if not (REPO / link).exists()] == []
