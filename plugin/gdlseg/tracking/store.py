"""The MLflow tracking store: its URI, experiments, reachability, the run records, and :func:`send`.

Store of a run: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite database
``<output_dir>/mlflow/mlflow.db`` with artifacts in ``<output_dir>/mlflow/artifacts``; the URI
``none`` disables tracking. A run record (``mlflow_run.json`` beside a training's checkpoints) names
a run, its store and its process, for the evaluate and infer runs that derive from it.

Everything a run sends after its creation is a record (a JSON-ready dict, see
:mod:`gdlseg.tracking.spool`); :func:`send` delivers one, live or when a spool is replayed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gdlseg.versions import bundle_version, software_versions

logger = logging.getLogger("gdlseg.tracking")
RUN_RECORD = "mlflow_run.json"
MAX_TAG_LENGTH = 5000
BATCH_METRICS, BATCH_PARAMS = 1000, 100


def default_tracking_uri(output_dir: os.PathLike | str) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<output_dir>/mlflow/mlflow.db``."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = Path(output_dir).resolve() / "mlflow"
    return f"sqlite:///{folder / 'mlflow.db'}"


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, or None for any other store."""
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


def experiment_id(client: Any, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created if missing (another run may create it at the same moment).

    A new experiment in a SQLite store keeps its artifacts in ``artifacts/`` next to the database.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    database = sqlite_database(tracking_uri)
    artifact_location = None if database is None else (database.parent / "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def server_reachable(uri: str, timeout: float = 5.0) -> bool:
    """False when ``uri`` is an HTTP(S) tracking server whose ``/health`` does not answer 200 within ``timeout``.

    Checked before each request: MLflow's own client retries an unreachable server for minutes.
    """
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def read_run_record(path: os.PathLike | str | None) -> dict[str, Any]:
    """The run record JSON (run id, tracking URI, ...) or ``{}`` when there is none."""
    if path is None or not Path(path).is_file():
        return {}
    return json.loads(Path(path).read_text())


def derived_run_tracking_uri(
    tracking_uri: str | None, disabled: bool, training_record: Mapping[str, Any]
) -> str | None:
    """The store of an evaluate or infer run that derives from a training, so it lands beside that training.

    ``"none"`` when ``disabled``; else ``tracking_uri`` when given; else None when ``$MLFLOW_TRACKING_URI``
    is set (a run reads it); else the store named in the training's run record when it still exists
    (a server URI is taken as is); else None (the SQLite default in the run's own output folder).
    """
    if disabled:
        return "none"
    if tracking_uri:
        return tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    training_uri = training_record.get("tracking_uri")
    if isinstance(training_uri, str) and training_uri:
        database = sqlite_database(training_uri)
        if database is None or database.is_file():
            return training_uri
    return None


def software_tags(bundle_root: os.PathLike | str | None = None) -> dict[str, str]:
    """Versions of gdlseg and its stack, and the git commit of ``bundle_root`` when it is in a checkout."""
    names = ("gdlseg", "monai", "torch", "mlflow", "python")
    tags = {f"{name}.version": version for name, version in software_versions(names).items()}
    if bundle_root is not None:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=bundle_root, capture_output=True, text=True, timeout=10
            )
            if commit.returncode == 0:
                tags["git.commit"] = commit.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        version = bundle_version(bundle_root)
        if version is not None:
            tags["bundle.version"] = version
    return tags


def unique_run_name(job: str) -> str:
    """``<job>-<UTC time>-<6 random hex digits>``: unique even for runs started in the same second."""
    return f"{job}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def now_ms() -> int:
    """The time as MLflow stamps it: milliseconds since the epoch."""
    return int(time.time() * 1000)


def send(client: Any, run_id: str, record: Mapping[str, Any]) -> None:
    """Deliver one record (``params``, ``tags``, ``metrics``, ``artifacts``, ``inputs``, ``register`` or
    ``end``) to run ``run_id``.

    Params and metrics go in batches (one request per 100 params or 1000 metric rows); tag values are cut
    to MLflow's limit; artifact paths that no longer exist are skipped with a warning.
    """
    from mlflow.entities import Metric, Param, RunTag

    op = record["op"]
    if op == "params":
        params = [Param(key, value) for key, value in record["params"].items()]
        for first in range(0, len(params), BATCH_PARAMS):
            client.log_batch(run_id, params=params[first : first + BATCH_PARAMS])
    elif op == "tags":
        tags = [RunTag(key, value[:MAX_TAG_LENGTH]) for key, value in record["tags"].items()]
        client.log_batch(run_id, tags=tags)
    elif op == "metrics":
        metrics = [Metric(key, value, stamp, step) for key, value, stamp, step in record["metrics"]]
        for first in range(0, len(metrics), BATCH_METRICS):
            client.log_batch(run_id, metrics=metrics[first : first + BATCH_METRICS])
    elif op == "artifacts":
        for path in map(Path, record["paths"]):
            if path.is_file():
                client.log_artifact(run_id, str(path))
            elif path.is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=path.name)
            else:
                logger.warning("Artifact %s no longer exists: not uploaded.", path)
    elif op == "inputs":
        log_dataset_input(client, run_id, record["dataset"], record.get("context", "training"))
    elif op == "register":
        register_model_version(client, run_id, record["name"], record.get("alias"), record["artifact_path"])
    elif op == "end":
        client.set_terminated(run_id, record["status"], end_time=record.get("end_time"))
    else:
        raise ValueError(f"unknown tracking record {op!r}")


def log_dataset_input(client: Any, run_id: str, dataset: Mapping[str, Any], context: str) -> None:
    """Log ``dataset`` (the fields of ``mlflow.entities.Dataset``) as an input of run ``run_id``."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    entity = Dataset(
        name=dataset["name"],
        digest=dataset["digest"],
        source_type=dataset["source_type"],
        source=dataset["source"],
        schema=dataset.get("schema"),
        profile=dataset.get("profile"),
    )
    inputs = [DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])]
    try:
        client.log_inputs(run_id, inputs)
    except MlflowException:
        # MLflow's store checks for the dataset, then inserts it: two runs of one datalist starting
        # together collide on its key. The second attempt finds the row the other run wrote.
        time.sleep(1.0)
        client.log_inputs(run_id, inputs)


def register_model_version(client: Any, run_id: str, name: str, alias: str | None, artifact_path: str) -> str:
    """Register ``runs:/<run_id>/<artifact_path>`` as a new version of ``name`` (the registered model is
    created if missing), set ``alias`` on it when given, and return the version."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name)
        except MlflowException:  # another run created it at the same moment
            client.get_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/{artifact_path}", run_id=run_id).version
    if alias:
        client.set_registered_model_alias(name, alias, version)
    logger.info("Registered model %s version %s%s", name, version, f" (alias {alias})" if alias else "")
    return str(version)
