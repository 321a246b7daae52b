"""The parent MLflow run of a cross-validation: one per output folder, shared by every fold's run.

:func:`cross_validation_run` creates it the first time a fold's training starts and records it in
``<output_dir>/crossval.json`` (run id, name, experiment, tracking URI); every later fold, a resumed one,
or one started at the same moment in another process or on another machine sharing the folder, finds it
there. Of processes racing to create it, one records its run and the others delete theirs. The parent
has the tags ``gdlseg.job`` = ``crossval`` and ``num_folds``, the split's settings as params and
``splits.json`` as an artifact; each fold's training run is nested under it with MLflow's tag
``mlflow.parentRunId`` (set by :class:`gdlseg.engines.mlflow_handler.MLflowTracker`).
:func:`log_cross_validation_summary` gives it the out-of-fold summary and ends it FINISHED; until
then it is RUNNING.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from gdlseg.data.atomic import write_json_atomically, write_json_if_absent
from gdlseg.data.splits import SPLITS_FILE, splits_sha256
from gdlseg.tracking.store import (
    experiment_id,
    now_ms,
    read_run_record,
    send,
    server_reachable,
    software_tags,
    unique_run_name,
)

logger = logging.getLogger("gdlseg.tracking")
CROSSVAL_RECORD = "crossval.json"
PARENT_RUN_TAG = "mlflow.parentRunId"  # mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID: nests a run in the UI


def cross_validation_run(
    output_dir: os.PathLike | str,
    tracking_uri: str,
    experiment_name: str = "gdlseg",
    num_folds: int | None = None,
    bundle_root: os.PathLike | str | None = None,
) -> str | None:
    """The id of the cross-validation's parent run in ``tracking_uri``, created when ``<output_dir>/crossval.json``
    names none in that store (see the module docstring).

    Returns None when tracking is off (``"none"``) or the store cannot be reached: a warning says so and
    the fold's run is then not nested (it is spooled as any run is).
    """
    if tracking_uri.strip().lower() == "none":
        return None
    path = Path(output_dir) / CROSSVAL_RECORD
    record = read_run_record(path)
    same_split = record.get("splits_sha256") in (None, splits_sha256(output_dir))
    if record.get("run_id") and record.get("tracking_uri") == tracking_uri and same_split:
        return str(record["run_id"])
    if not same_split:  # folds of a new split (splits.json replaced) belong to a new cross-validation
        path.unlink(missing_ok=True)
        record = {}
    try:
        return _create_parent(path, record, tracking_uri, experiment_name, num_folds, bundle_root)
    except Exception as error:  # a fold trains whether or not its parent run could be made
        logger.warning(
            "MLflow: the cross-validation's parent run could not be created in %s (%s): this fold's run is not nested.",
            tracking_uri,
            f"{type(error).__name__}: {error}"[:300],
        )
        return None


def _create_parent(
    path: Path,
    previous: Mapping,
    tracking_uri: str,
    experiment_name: str,
    num_folds: int | None,
    bundle_root: os.PathLike | str | None,
) -> str:
    from mlflow.tracking import MlflowClient

    if not server_reachable(tracking_uri):
        raise ConnectionError("its /health endpoint does not answer")
    client = MlflowClient(tracking_uri)
    experiment = experiment_id(client, experiment_name, tracking_uri)
    run_name = unique_run_name("crossval")
    tags = {"gdlseg.job": "crossval", "num_folds": str(num_folds), **software_tags(bundle_root)}
    run_id = client.create_run(experiment, start_time=now_ms(), tags=tags, run_name=run_name).info.run_id
    record = {"run_id": run_id, "run_name": run_name, "experiment": experiment_name, "tracking_uri": tracking_uri}
    record["splits_sha256"] = splits_sha256(path.parent)
    if previous:  # a record for another store: this store gets its own parent
        write_json_atomically(path, record)
    elif not write_json_if_absent(path, record):
        client.delete_run(run_id)  # another process recorded its parent first: every fold uses that one
        return str(read_run_record(path)["run_id"])
    splits = path.parent / SPLITS_FILE
    if splits.is_file():
        content = json.loads(splits.read_text())
        params = {key: str(content.get(key)) for key in ("num_folds", "seed", "group_key", "cases")}
        send(client, run_id, {"op": "params", "params": params})
        send(client, run_id, {"op": "artifacts", "paths": [str(splits)]})
    logger.info("MLflow cross-validation run %s (%s) in %s", run_name, run_id, tracking_uri)
    return run_id


def log_cross_validation_summary(
    output_dir: os.PathLike | str, metrics: Mapping[str, float], artifacts: Sequence[os.PathLike | str]
) -> str | None:
    """Log ``metrics`` and ``artifacts`` (files or folders) to the parent run that ``<output_dir>/crossval.json``
    names, and end it FINISHED; return its id.

    Returns None, with a warning, when the folder names no parent run or its store cannot be reached
    (the summary files are on disk either way).
    """
    record = read_run_record(Path(output_dir) / CROSSVAL_RECORD)
    run_id, tracking_uri = record.get("run_id"), record.get("tracking_uri")
    if not run_id or not tracking_uri:
        logger.warning("No cross-validation parent run in %s: the summary is not logged to MLflow.", CROSSVAL_RECORD)
        return None
    try:
        from mlflow.tracking import MlflowClient

        if not server_reachable(tracking_uri):
            raise ConnectionError("its /health endpoint does not answer")
        client = MlflowClient(tracking_uri)
        stamp = now_ms()
        send(client, run_id, {"op": "metrics", "metrics": [[k, float(v), stamp, 0] for k, v in metrics.items()]})
        send(client, run_id, {"op": "artifacts", "paths": [str(Path(item).resolve()) for item in artifacts]})
        client.set_terminated(run_id, "FINISHED", end_time=now_ms())
    except Exception as error:  # the summary is written; only its MLflow copy is missing
        logger.warning(
            "MLflow: the cross-validation summary could not be logged to run %s in %s (%s).",
            run_id,
            tracking_uri,
            f"{type(error).__name__}: {error}"[:300],
        )
        return None
    return str(run_id)


def abandon_cross_validation_run(output_dir: os.PathLike | str) -> None:
    """Forget the parent run that ``<output_dir>/crossval.json`` names (a new cross-validation starts in the
    folder): a parent still RUNNING, whose summary never came, ends KILLED so the MLflow UI does not show it
    as in progress; then the record is removed. A store that cannot be reached only costs a warning."""
    path = Path(output_dir) / CROSSVAL_RECORD
    record = read_run_record(path)
    run_id, tracking_uri = record.get("run_id"), record.get("tracking_uri")
    if run_id and tracking_uri:
        try:
            from mlflow.tracking import MlflowClient

            if not server_reachable(tracking_uri):
                raise ConnectionError("its /health endpoint does not answer")
            client = MlflowClient(tracking_uri)
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, "KILLED", end_time=now_ms())
        except Exception as error:  # the new cross-validation starts either way
            logger.warning(
                "MLflow: the earlier cross-validation run %s in %s could not be ended (%s).",
                run_id,
                tracking_uri,
                f"{type(error).__name__}: {error}"[:300],
            )
    path.unlink(missing_ok=True)
