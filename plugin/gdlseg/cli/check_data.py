"""`gdlseg check-data` (being written; owned by the helper that implements it)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("check-data", help="(not yet available)")
    parser.set_defaults(handler=run, command="check-data")
    return parser


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("gdlseg check-data is not implemented yet")
