"""`gdlseg export` (being written; owned by the helper that implements it)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("export", help="(not yet available)")
    parser.set_defaults(handler=run, command="export")
    return parser


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("gdlseg export is not implemented yet")
