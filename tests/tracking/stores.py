"""Shared by the tracking tests: a SQLite store in a folder, and the one run of an experiment."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient


def sqlite(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def only_run(uri: str, experiment: str = "gdlseg"):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return client, runs[0]
