"""A finished training run in a real SQLite MLflow store, with the ``mlflow_run.json`` training writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient


@dataclass
class TrainingRecord:
    models: Path  # holds mlflow_run.json
    tracking_uri: str
    experiment_id: str
    run_id: str


def record_a_finished_training(folder: Path, experiment: str = "liver") -> TrainingRecord:
    """``folder/mlflow/mlflow.db`` with one FINISHED training run, named by ``folder/models/mlflow_run.json``."""
    store = folder / "mlflow" / "mlflow.db"
    store.parent.mkdir(parents=True)
    uri = f"sqlite:///{store}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(experiment, artifact_location=(store.parent / "artifacts").as_uri())
    training = client.create_run(experiment_id, run_name="train-1")
    client.set_terminated(training.info.run_id, "FINISHED")
    models = folder / "models"
    models.mkdir(exist_ok=True)
    record = {"run_id": training.info.run_id, "run_name": "train-1", "experiment": experiment, "tracking_uri": uri}
    (models / "mlflow_run.json").write_text(json.dumps(record))
    return TrainingRecord(models, uri, experiment_id, training.info.run_id)
