"""Entry point of the ``gdlseg`` command.

Exit codes: 0 success, 2 usage error (argparse's convention). Subcommands (infer, evaluate,
convert, analyze, train) are added by later work; until then the command reports its version.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gdlseg import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gdlseg``."""
    parser = argparse.ArgumentParser(
        prog="gdlseg",
        description="gdlseg: 3D medical image segmentation with a class-weighted generalized Dice loss (MONAI plugin).",
    )
    parser.add_argument("--version", action="version", version=f"gdlseg {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gdlseg`` with ``argv`` (default: the process arguments) and return the exit code."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
