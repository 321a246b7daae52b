"""Entry point of the ``gdlseg`` command.

Each subcommand lives in its own module ``gdlseg.cli.<name>`` that provides
``register(subparsers)`` (adds its parser and sets ``handler``) and ``run(args) -> int``.

Exit codes: 0 all good; 1 some cases failed or the command could not complete (the message names
what and why); 2 usage error (argparse's convention, also raised as :class:`UsageError`).
Set ``GDLSEG_DEBUG=1`` to see the full traceback of an error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from gdlseg import __version__
from gdlseg.cli.common import EXIT_SOME_FAILED, EXIT_USAGE, UsageError

SUBCOMMANDS = (
    "infer",
    "evaluate",
    "convert",
    "analyze",
    "plan",
    "check_data",
    "train",
    "export",
    "bundle",
    "replay_tracking",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gdlseg`` with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="gdlseg",
        description="gdlseg: 3D medical image segmentation with a class-weighted generalized Dice loss (MONAI plugin).",
    )
    parser.add_argument("--version", action="version", version=f"gdlseg {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"gdlseg.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gdlseg`` with ``argv`` (default: the process arguments) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return handler(args)
    except UsageError as error:
        if os.environ.get("GDLSEG_DEBUG"):
            raise
        print(f"gdlseg {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError, RuntimeError) as error:
        if os.environ.get("GDLSEG_DEBUG"):
            raise
        print(f"gdlseg {args.command}: error: {error}", file=sys.stderr)
        return EXIT_SOME_FAILED


if __name__ == "__main__":
    sys.exit(main())
