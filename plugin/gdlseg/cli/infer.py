"""`gdlseg infer` (being written; owned by the helper that implements it)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("infer", help="(not yet available)")
    parser.set_defaults(handler=run, command="infer")
    return parser


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("gdlseg infer is not implemented yet")
