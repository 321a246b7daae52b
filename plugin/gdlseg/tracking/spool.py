"""What MLflow could not receive, kept on disk, and sent later.

When the tracking store cannot be reached (at the start of a run or in the middle of it) a
``TrackedRun`` stops contacting it and writes its records to ``<output_dir>/mlflow_spool/<run
name>.jsonl`` instead: one JSON object per line, in order, each with ``"op"`` and ``"sent"``:

- ``start``: experiment, run name, tags, start time (ms), and the run id if the store gave one;
- ``params`` (flattened strings), ``tags``, ``metrics`` (``[key, value, timestamp_ms, step]`` rows);
- ``artifacts``: absolute paths of files and folders to upload (they stay in the output folder);
- ``end``: status (FINISHED, FAILED, KILLED), end time and the error, if any.

The spool holds the whole run, the records already sent too (``"sent": true``), so that it can be
replayed either into the store that went away (only the unsent records are added to the run it
already has) or into any other store (a complete new run is created).

Replay: ``gdlseg replay-tracking <output_dir>/mlflow_spool --tracking-uri URI`` (or :func:`replay_spool`),
which sends each record with :func:`gdlseg.tracking.store.send`, as the live run does. A replayed
file is renamed ``*.replayed.jsonl`` so it is never sent twice.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gdlseg.tracking.store import experiment_id, send

logger = logging.getLogger("gdlseg.tracking")
SPOOL_FOLDER = "mlflow_spool"
REPLAYED_SUFFIX = ".replayed.jsonl"


class Spool:
    """An append-only JSON-lines file; every append is flushed and synced, so a crash keeps what was written."""

    def __init__(self, path: os.PathLike | str) -> None:
        self.path = Path(path)

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as stream:
            for record in records:
                stream.write(json.dumps(record) + "\n")
            stream.flush()
            os.fsync(stream.fileno())


def read_spool(path: os.PathLike | str) -> list[dict[str, Any]]:
    """The records of a spool file; a last line cut short by a crash is dropped with a warning."""
    records = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                logger.warning("%s: last line is incomplete (the process died while writing it); skipped.", path)
                continue
            raise ValueError(f"{path}: line {number} is not valid JSON") from None
    if not records or records[0].get("op") != "start":
        raise ValueError(f"{path}: not an MLflow spool (the first record must be 'start').")
    return records


def spool_files(path: os.PathLike | str) -> list[Path]:
    """``path`` itself if it is a file, else the spool files in the folder not yet replayed."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such spool file or folder.")
    return sorted(p for p in path.glob("*.jsonl") if not p.name.endswith(REPLAYED_SUFFIX))


def replay_spool(path: os.PathLike | str, tracking_uri: str) -> list[str]:
    """Send the spooled runs in ``path`` (a spool file or folder) to ``tracking_uri``; return their run ids.

    A run that still exists in the target store (the same server, back again) receives the records
    that were not sent; otherwise a new run is created from all records, tagged
    ``gdlseg.replayed_from_run_id`` with the original id when there was one. A spool without an
    ``end`` record (the process was killed) ends KILLED. Artifacts whose files no longer exist are
    skipped with a warning.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    run_ids = []
    for file in spool_files(path):
        run_ids.append(_replay_file(client, tracking_uri, file))
        file.rename(file.with_name(file.name.removesuffix(".jsonl") + REPLAYED_SUFFIX))
        logger.info("Replayed %s into run %s at %s", file, run_ids[-1], tracking_uri)
    return run_ids


def _replay_file(client: Any, tracking_uri: str, file: Path) -> str:
    from mlflow.exceptions import MlflowException

    records = read_spool(file)
    start = records[0]
    run_id = start.get("run_id")
    existing = False
    if run_id:
        try:
            client.get_run(run_id)
            existing = True
        except MlflowException:
            existing = False
    if existing:
        todo = [record for record in records[1:] if not record.get("sent")]
    else:
        tags = dict(start.get("tags", {}))
        if run_id:
            tags["gdlseg.replayed_from_run_id"] = run_id
        experiment = experiment_id(client, start["experiment"], tracking_uri)
        run_id = client.create_run(
            experiment, start_time=start.get("start_time"), tags=tags, run_name=start.get("run_name")
        ).info.run_id
        todo = records[1:]
    for record in todo:
        send(client, run_id, record)
    if not any(record["op"] == "end" for record in records):
        client.set_tag(run_id, "gdlseg.error", "the spool has no end record: the process was killed")
        client.set_terminated(run_id, "KILLED")
    return run_id
