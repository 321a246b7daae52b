"""MLflow tracking of every train, evaluate and infer run, without Ignite.

- :mod:`~gdlseg.tracking.params`: nested settings flattened to params, and the settings of the loss,
  network, optimizer and schedule as built;
- :mod:`~gdlseg.tracking.store`: the tracking URI, experiments, reachability, run records, and
  :func:`send`, which delivers one record live or on replay;
- :mod:`~gdlseg.tracking.run`: :class:`RunSettings`, :class:`TrackedRun` and :func:`tracked_run`;
- :mod:`~gdlseg.tracking.spool`: what an unreachable store did not receive, kept on disk and replayed;
- :mod:`~gdlseg.tracking.crossval`: the parent run of a cross-validation, shared by its folds' runs.

The Ignite handler that drives a :class:`TrackedRun` from a MONAI engine is
:class:`gdlseg.engines.mlflow_handler.MLflowTracker`.
"""

from gdlseg.tracking.params import (
    flatten,
    module_hyperparameters,
    optimizer_hyperparameters,
    scheduler_hyperparameters,
)
from gdlseg.tracking.run import TERMINAL_STATUSES, RunSettings, TrackedRun, tracked_run
from gdlseg.tracking.spool import SPOOL_FOLDER, Spool, read_spool, replay_spool, spool_files
from gdlseg.tracking.store import (
    RUN_RECORD,
    default_tracking_uri,
    derived_run_tracking_uri,
    experiment_id,
    read_run_record,
    send,
    server_reachable,
    software_tags,
    sqlite_database,
    unique_run_name,
)

__all__ = [
    "RUN_RECORD",
    "SPOOL_FOLDER",
    "TERMINAL_STATUSES",
    "RunSettings",
    "Spool",
    "TrackedRun",
    "default_tracking_uri",
    "derived_run_tracking_uri",
    "experiment_id",
    "flatten",
    "module_hyperparameters",
    "optimizer_hyperparameters",
    "read_run_record",
    "read_spool",
    "replay_spool",
    "scheduler_hyperparameters",
    "send",
    "server_reachable",
    "software_tags",
    "spool_files",
    "sqlite_database",
    "tracked_run",
    "unique_run_name",
]
