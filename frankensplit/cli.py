"""The ``frankensplit`` command line: one thin sub-command per concern.

Each sub-command is a module of :mod:`frankensplit.commands` (``train`` and the runtime's
``export``, ``client``, ``serve`` still live beside their package) exposing::

    HELP: str                                 # one line for ``frankensplit --help``
    def configure(parser: ArgumentParser) -> None
    def run(args: Namespace) -> int           # exit code

and is listed in ``COMMANDS`` below (imported lazily so ``frankensplit models`` does not pay for
everything). Library errors (``ValueError``, ``TypeError``, ``OSError``) become one clear line on
stderr and exit code 2; nothing here prints a traceback at a user for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

#: sub-command -> module implementing it.
COMMANDS: dict[str, str] = {
    "models": "frankensplit.commands.models",
    "info": "frankensplit.commands.info",
    "encode": "frankensplit.commands.encode",
    "decode": "frankensplit.commands.decode",
    "demo": "frankensplit.commands.demo",
    "train": "frankensplit.train.command",
    "saliency": "frankensplit.commands.saliency",
    "eval": "frankensplit.commands.eval",
    "export": "frankensplit.runtime.export_command",
    "client": "frankensplit.runtime.client_command",
    "serve": "frankensplit.runtime.serve_command",
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``frankensplit`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first)  # an unknown or missing command builds them all, for the help
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("frankensplit: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        print(f"frankensplit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
