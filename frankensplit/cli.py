"""The ``frankensplit`` command line: one thin sub-command per concern.

Each sub-command is a module of :mod:`frankensplit.commands` exposing::

    HELP: str                                 # one line for ``frankensplit --help``
    def configure(parser: ArgumentParser) -> None
    def run(args: Namespace) -> int           # exit code

and is listed in ``COMMANDS`` below (imported lazily so ``frankensplit models`` does not pay for
everything). Errors become one line on stderr and exit code 2 (argparse's usage errors exit 2
too): library errors (``ValueError``, ``TypeError``, ``OSError``, ...) as `describe_error` words
them, anything else with its type named as unexpected. Nothing prints a traceback at a user
unless ``FRANKENSPLIT_TRACEBACK=1`` asks for it. The argument types (``positive_int``, ``port``,
``teacher_weights``...) and `check_model` the sub-commands share are defined here too, so that
bad values fail while parsing and a typo'd model id before torch loads.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.error import HTTPError, URLError

from frankensplit.registry import UnknownNameError

__all__ = ["COMMANDS", "TEACHER_WEIGHT_MODES", "check_model", "describe_error", "existing_file",
           "main", "non_negative_float", "non_negative_int", "port", "positive_float",
           "positive_int", "teacher_weights"]

#: sub-command -> module implementing it.
COMMANDS: dict[str, str] = {
    "models": "frankensplit.commands.models",
    "info": "frankensplit.commands.info",
    "encode": "frankensplit.commands.encode",
    "decode": "frankensplit.commands.decode",
    "demo": "frankensplit.commands.demo",
    "train": "frankensplit.commands.train",
    "saliency": "frankensplit.commands.saliency",
    "eval": "frankensplit.commands.eval",
    "export": "frankensplit.commands.export",
    "client": "frankensplit.commands.client",
    "serve": "frankensplit.commands.serve",
    "profile": "frankensplit.commands.profile",
    "simulate": "frankensplit.commands.simulate",
}


def _load(name: str):
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("frankensplit"):
            return None  # a concern not built yet: the command is simply not offered
        raise


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with every available sub-command (or just ``only``).

    Building only the requested sub-command keeps light commands light: ``frankensplit client``
    must not import torch through the training command's module.
    """
    from frankensplit import __version__

    parser = argparse.ArgumentParser(
        prog="frankensplit",
        description="FrankenSplit: learned feature compression for split computing.",
    )
    parser.add_argument("--version", action="version", version=f"frankensplit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [only] if only in COMMANDS else COMMANDS:
        module = _load(name)
        if module is None:
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


# ------------------------------------------------------------------------------------------------
# Shared by the sub-commands: argument types (``type=`` of ``add_argument``: a bad value is then an
# argparse usage error naming the flag, raised while parsing, before a model loads, a folder is
# written or a server binds) and the early model check. They live here, below every command
# module of ``commands``, and import nothing heavy.
# ------------------------------------------------------------------------------------------------

#: The named teacher-weight sources of `frankensplit.backbones.create_backbone`.
TEACHER_WEIGHT_MODES = ("auto", "offline", "online")


def _int(text: str, what: str, low: int, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _float(text: str, what: str, ok: Callable[[float], bool]) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, sizes, threads)."""
    return _int(text, "a positive integer", 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (retries, warm-up runs, worker processes)."""
    return _int(text, "an integer >= 0", 0)


def port(text: str) -> int:
    """A TCP port, 0..65535 (0: any free port)."""
    return _int(text, "an integer in 0..65535", 0, 65535)


def positive_float(text: str) -> float:
    """A finite number > 0 (timeouts, deadlines)."""
    return _float(text, "a number > 0", lambda v: v > 0)


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (waits, byte counts, RTTs)."""
    return _float(text, "a number >= 0", lambda v: v >= 0)


def existing_file(text: str) -> str:
    """The path of a file that exists."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"file not found: {text}")
    return text


def teacher_weights(*extra: str) -> Callable[[str], str]:
    """The type of ``--teacher-weights``: auto, offline, online (and ``extra``) or a checkpoint
    file that exists; a typo fails while parsing instead of after the server is up."""
    modes = (*TEACHER_WEIGHT_MODES, *extra)

    def parse(text: str) -> str:
        if text in modes or Path(text).is_file():
            return text
        raise argparse.ArgumentTypeError(
            f"expected {', '.join(modes)} or a checkpoint file, got {text!r} (no such file)")

    parse.__name__ = "teacher weights"
    return parse


def check_model(spec: str) -> None:
    """Fail fast (before torch loads) on a model that is neither a zoo id nor an existing path.

    Raises:
        UnknownNameError: (a ValueError) `describe_error` words it with the closest model id.
    """
    from frankensplit.models.zoo_index import MODELS

    if spec not in MODELS and not Path(spec).exists():
        MODELS.get(spec)


# ------------------------------------------------------------------------------------------------
# Errors and the entry point
# ------------------------------------------------------------------------------------------------

def _describe_os_error(e: OSError) -> str:
    name = e.filename
    if isinstance(e, HTTPError):
        return str(e)
    if isinstance(e, URLError):  # the server is down, the host unknown, the port wrong
        return (f"cannot reach the server: {getattr(e.reason, 'strerror', None) or e.reason} "
                "(check --url, and that `frankensplit serve` runs there)")
    if name is None:
        return e.strerror or str(e)
    if isinstance(e, FileNotFoundError):
        return f"file or folder not found: {name}"
    if isinstance(e, FileExistsError) and Path(name).is_file():
        return f"{name} is a file, where a folder is needed: choose another path"
    if isinstance(e, IsADirectoryError):
        return f"{name} is a folder, where a file is needed"
    return f"{e.strerror or e}: {name}"


def describe_error(e: BaseException) -> str:
    """One line saying what went wrong and, where it can, what to do instead."""
    if isinstance(e, UnknownNameError) and e.kind == "model id":
        name = str(e.name)
        if Path(name).exists():
            return f"{name}: this option takes a model id (`frankensplit models` lists them)"
        if "/" in name or os.sep in name or Path(name).suffix in (".safetensors", ".pt", ".pth"):
            return (f"{name} is neither a model id nor an existing file or folder "
                    "(`frankensplit models` lists the model ids)")
        close = f"; did you mean {e.matches[0]!r}?" if e.matches else ""
        return f"unknown model id {name!r}{close} (`frankensplit models` lists them)"
    if isinstance(e, UnicodeDecodeError):
        return (f"a file given is binary, not {e.encoding} text (byte {e.object[e.start]:#04x} at "
                f"offset {e.start}): pass the JSON, YAML or CSV file the option asks for")
    text = _describe_os_error(e) if isinstance(e, OSError) else str(e)
    return " ".join(text.split()) or type(e).__name__  # one line, whatever the library wrote


@contextlib.contextmanager
def _torch_threads_kept() -> Iterator[None]:
    """Restore torch's thread count after a command that sets it (``--threads``), so that a
    command run in process (tests, a notebook) leaves none of its state behind. A process that
    has not imported torch before the command has no count to keep, and none is imported here:
    ``client`` stays torch-free."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        if before is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``frankensplit`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first)  # an unknown or missing command builds them all, for the help
    if first is not None and first not in COMMANDS:
        close = difflib.get_close_matches(first, list(COMMANDS), n=1)
        if close:
            parser.error(f"unknown command {first!r}; did you mean {close[0]!r}? "
                         "(`frankensplit --help` lists them)")
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        with _torch_threads_kept():
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("frankensplit: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("FRANKENSPLIT_TRACEBACK") == "1":
            raise
        known = (ValueError, TypeError, OSError, RuntimeError, ImportError)
        message = describe_error(e) if isinstance(e, known) else (
            f"unexpected {type(e).__name__}: {describe_error(e)} "
            "(FRANKENSPLIT_TRACEBACK=1 shows where)")
        print(f"frankensplit {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
