"""``gdlseg replay-tracking``: send to MLflow what a run could not send when its server was unreachable.

A run whose tracking server was down at the start or went away keeps everything the server did not
receive in ``<output_dir>/mlflow_spool/<run>.jsonl``. This command sends those records to a store;
a run that still exists there is completed, otherwise a complete new run is created.
"""

from __future__ import annotations

import argparse
import logging

from mlflow.exceptions import MlflowException

from gdlseg.cli.common import EXIT_OK, EXIT_SOME_FAILED
from gdlseg.tracking.spool import replay_spool


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "replay-tracking",
        help="send a run's MLflow spool (records the server did not receive) to a tracking store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spool", help="a spool file or folder (<output_dir>/mlflow_spool)")
    parser.add_argument("--tracking-uri", required=True, help="e.g. http://host:5000 or sqlite:///path/mlflow.db")
    parser.set_defaults(handler=run, command="replay-tracking")
    return parser


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_ids = replay_spool(args.spool, args.tracking_uri)
    except MlflowException as error:
        print(f"gdlseg replay-tracking: error: {error}")
        return EXIT_SOME_FAILED
    print(f"replayed {len(run_ids)} run(s): {' '.join(run_ids)}")
    return EXIT_OK
