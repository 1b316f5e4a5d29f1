"""Every sub-command as a new user first tries it: with no arguments, a missing file, a typo'd
model id and bad option values. Each must end in one clear error line and a non-zero exit code,
never a traceback; where the fix is another command, the line names it.

The sub-commands come from the CLI's own parser, so a new command is walked for free. All runs are
in process (``main(argv)``), none loads data or binds a port: every case fails before that.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest
import timm  # noqa: F401 - sets TORCHINDUCTOR_CACHE_DIR when first imported: here, not in a test

from frankensplit.cli import build_parser, main

TINY16 = Path(__file__).resolve().parents[2] / "shared" / "data" / "fixtures" / "tiny16"
IMAGE = TINY16 / "ILSVRC2012_val_00000001.jpg"

#: Commands that do real work with no arguments at all (list models, run the demo, time this
#: machine); their no-argument run is the feature, not an error case.
RUN_WITHOUT_ARGUMENTS = {"models", "demo", "profile"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


SUBPARSERS = _subparsers()
COMMAND_NAMES = sorted(SUBPARSERS)


def _needs_arguments(name: str) -> bool:
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            SUBPARSERS[name].parse_args([])
        except SystemExit:
            return True
    return False


def _model_action(name: str) -> argparse.Action | None:
    return next((a for a in SUBPARSERS[name]._actions if a.dest == "model"), None)


def _required_argv(name: str, missing: Path, model: str | None = None) -> list[str]:
    """``name`` with every required argument: a path that does not exist (``model`` for the
    model, when given)."""
    argv = [name]
    for action in SUBPARSERS[name]._actions:
        value = model if model is not None and action.dest == "model" else str(missing / action.dest)
        if not action.option_strings and action.nargs not in ("?", "*"):
            argv.append(value)  # a positional argument
        elif action.required or action.dest == "model" and model is not None:
            argv += [action.option_strings[-1], value]
    return argv


def _fails_cleanly(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``argv``; check it failed with one error line and no traceback; return that line."""
    try:
        code = main(argv)
        usage = False
    except SystemExit as e:  # argparse's usage error
        code, usage = e.code, True
    out = capsys.readouterr()
    assert code not in (0, None), f"{argv} succeeded: {out.out[-300:]}"
    assert "Traceback" not in out.out + out.err, out.err
    lines = [line for line in out.err.strip().splitlines() if not line.startswith("note:")]
    assert lines, f"{argv}: nothing on stderr"
    errors = [line for line in lines if ": error: " in line]
    assert errors == [lines[-1]], f"{argv}: not one error line at the end: {lines}"
    if not usage:  # our own errors are that one line alone (argparse prints its usage first)
        assert len(lines) == 1, f"{argv}: more than the error line: {lines}"
    assert lines[-1].startswith("frankensplit")
    return lines[-1]


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FRANKENSPLIT_TRACEBACK", raising=False)
    monkeypatch.chdir(tmp_path)  # no profile.json, config or results of the repo in the way


def test_the_walk_covers_every_command() -> None:
    assert len(COMMAND_NAMES) >= 13 and {"serve", "client", "simulate"} <= set(COMMAND_NAMES)
    assert RUN_WITHOUT_ARGUMENTS <= set(COMMAND_NAMES)


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_no_arguments(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """With no arguments: argparse names what is required, or the command says what is missing
    (``simulate`` names ``frankensplit profile``)."""
    if name in RUN_WITHOUT_ARGUMENTS:
        assert not _needs_arguments(name)
        _fails_cleanly([name, "--no-such-option"], capsys)
        return
    line = _fails_cleanly([name], capsys)
    if not _needs_arguments(name):
        assert name == "simulate", f"{name} runs with no arguments: add it to RUN_WITHOUT_ARGUMENTS"
        assert "frankensplit profile" in line


@pytest.mark.parametrize("name", [n for n in COMMAND_NAMES if _needs_arguments(n)])
def test_missing_files(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every required argument a path that does not exist: one line naming it."""
    missing = tmp_path / "missing"
    argv = _required_argv(name, missing)
    line = _fails_cleanly(argv, capsys)
    assert str(missing) in line, line


#: Commands whose ``--model`` is not a zoo id: simulate's names a row of the eval result it reads.
MODEL_NOT_A_ZOO_ID = {"simulate"}


@pytest.mark.parametrize("name", [n for n in COMMAND_NAMES
                                  if _model_action(n) is not None and n not in MODEL_NOT_A_ZOO_ID])
def test_model_id_typo(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``fs-lite0-l44``: the close id is suggested and ``frankensplit models`` named, before any
    other argument (all missing files here) is looked at."""
    line = _fails_cleanly(_required_argv(name, tmp_path / "missing", model="fs-lite0-l44"), capsys)
    assert "unknown model id 'fs-lite0-l44'; did you mean 'fs-lite0-l4'?" in line
    assert "`frankensplit models`" in line


def _binary(tmp_path: Path) -> str:
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xd8\xff\xe0 not text")
    return str(path)


def _empty_json(tmp_path: Path) -> str:
    path = tmp_path / "some.json"
    path.write_text("{}")
    return str(path)


#: argv (``{missing}``, ``{binary}``, ``{json}``: paths made per test) -> words the line must hold.
CASES: list[tuple[list[str], list[str]]] = [
    (["simulte"], ["did you mean 'simulate'?"]),
    (["simulate", "--profile", "{missing}"], ["{missing}", "frankensplit profile"]),
    (["simulate", "--profile", "{json}", "--eval", "{missing}"], ["frankensplit eval"]),
    (["simulate", "--profile", "{binary}"], ["binary", "JSON"]),
    (["simulate", "--bytes", "jpeg=1", "--connection-rtts", "-1"], ["--connection-rtts"]),
    (["train", "--config", "{binary}"], ["binary", "YAML"]),
    (["info", "fs-lite0-l4", "--teacher-weights", "bogus"], ["--teacher-weights", "auto"]),
    (["info", "runs/x/best.safetensors"], ["neither a model id", "frankensplit models"]),
    (["decode", str(IMAGE)], [str(IMAGE), "not a FrankenSplit stream"]),
    (["eval", "--data", str(TINY16), "--limit", "-3"], ["--limit", "positive"]),
    (["eval", "--data", str(TINY16), "--codecs", "jpg"], ["did you mean 'jpeg'?"]),
    (["export", "--model", "fs-lite0-l4", "--out", "{missing}", "--teacher-weights", "bogus"],
     ["--teacher-weights"]),
    (["profile", "--images", "{missing}"], ["{missing}"]),
    (["profile", "--repeat", "0"], ["--repeat"]),
    (["profile", "--bundle", "{missing}"], ["frankensplit export"]),
    (["profile", "--rate", "-1"], ["--rate", "integer >= 0"]),
    (["profile", "--model", "fs-lite0-untrained", "--rate", "0", "--limit", "1", "--codecs",
      "none"], ["--rate 0: fs-lite0-untrained has one fixed rate"]),
    (["demo", "--model", "fs-lite0-untrained", "--rate", "2", "--images", str(TINY16)],
     ["--rate 2: fs-lite0-untrained has one fixed rate"]),
    (["saliency", "--teacher", "tf_efficientnet_lite0", "--data", "{missing}", "--device", "gpu"],
     ["--device", "cuda"]),
    (["saliency", "--teacher", "tf_efficientnet_lite00", "--data", str(TINY16)],
     ["did you mean 'tf_efficientnet_lite0'?"]),
    (["client", str(IMAGE), "--bundle", "{missing}", "--url", "http://127.0.0.1:9"],
     ["frankensplit export"]),
    (["client", str(IMAGE), "--bundle", "{missing}", "--timeout", "-1"], ["--timeout"]),
    (["client", str(IMAGE), "--bundle", "{missing}", "--topk", "1001", "--save", "{missing}"],
     ["topk", "1..1000"]),
    (["client", str(IMAGE), "--bundle", "{missing}", "--cafile", "{missing}"], ["--cafile"]),
    # serve: each fails before binding; --host 256.0.0.0 would stop a regression that got further
    (["serve", "--model", "fs-lite0-untrained", "--port", "99999"], ["--port", "65535"]),
    (["serve", "--model", "fs-lite0-untrained", "--teacher-weights", "{missing}",
      "--host", "256.0.0.0"], ["--teacher-weights"]),
    (["serve", "--model", "fs-lite0-untrained", "--ssl-keyfile", "{missing}",
      "--ssl-certfile", "{missing}", "--host", "256.0.0.0"], ["--ssl-keyfile"]),
    (["serve", "--model", "fs-lite0-untrained", "--host", "256.0.0.0"], ["--host"]),
    (["serve", "--model", "{missing}", "--host", "256.0.0.0"], ["neither a model id"]),
    (["serve", "--model", "{binary}", "--host", "256.0.0.0"], ["cannot read weights"]),
]


@pytest.mark.parametrize(("argv", "words"), CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_values(argv: list[str], words: list[str], tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    """Bad values, missing and wrong files: the line names the flag or the command that fixes it."""
    if any(str(TINY16) in a for a in argv) and not TINY16.is_dir():
        pytest.skip(f"fixture images not found in {TINY16} (needs the shared data folder)")
    paths = {"missing": str(tmp_path / "missing" / "file"), "binary": _binary(tmp_path),
             "json": _empty_json(tmp_path)}
    line = _fails_cleanly([a.format(**paths) for a in argv], capsys)
    for word in words:
        assert word.format(**paths) in line, line


def test_unexpected_errors_are_one_line_too(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A bug (an exception no library contract names) is still one line, with its type, and
    ``FRANKENSPLIT_TRACEBACK=1`` lets it through for the developer."""
    from frankensplit.commands import models

    def broken(args: argparse.Namespace) -> int:
        raise KeyError("boom")

    monkeypatch.setattr(models, "run", broken)
    line = _fails_cleanly(["models"], capsys)
    assert "unexpected KeyError" in line and "FRANKENSPLIT_TRACEBACK=1" in line
    monkeypatch.setenv("FRANKENSPLIT_TRACEBACK", "1")
    with pytest.raises(KeyError):
        main(["models"])
