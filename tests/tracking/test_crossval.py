"""The cross-validation's parent run, in a real SQLite store: created once, fold runs nested under it,
the summary logged to it."""

from __future__ import annotations

import json

from ignite.engine import Engine
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from gdlseg.engines.mlflow_handler import MLflowTracker
from gdlseg.tracking.crossval import (
    CROSSVAL_RECORD,
    PARENT_RUN_TAG,
    cross_validation_run,
    log_cross_validation_summary,
)

from .stores import sqlite


def train_fold(folder, uri: str, fold: int) -> None:
    engine = Engine(lambda engine, batch: {"loss": float(batch)})
    engine.state.metrics = {}
    tracker = MLflowTracker(
        folder / f"fold_{fold}", job="train", tracking_uri=uri, fold=fold, num_folds=2, crossval_dir=folder
    )
    tracker.attach(engine)
    engine.run([1.0], max_epochs=1)


def test_fold_runs_are_nested_under_one_parent_that_holds_the_summary(tmp_path):
    assert PARENT_RUN_TAG == MLFLOW_PARENT_RUN_ID
    uri = sqlite(tmp_path)
    (tmp_path / "splits.json").write_text(json.dumps({"num_folds": 2, "seed": 0, "group_key": "group", "cases": 4}))
    train_fold(tmp_path, uri, 0)
    train_fold(tmp_path, uri, 1)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("gdlseg").experiment_id])
    [parent] = [run for run in runs if run.data.tags.get("gdlseg.job") == "crossval"]
    folds = sorted(
        (run for run in runs if run.data.tags.get("gdlseg.job") == "train"), key=lambda r: r.data.tags["fold"]
    )
    assert [run.data.tags["fold"] for run in folds] == ["0", "1"] and len(runs) == 3
    assert all(run.data.tags[MLFLOW_PARENT_RUN_ID] == parent.info.run_id for run in folds)
    assert parent.data.tags["num_folds"] == "2" and parent.data.params["seed"] == "0"
    assert parent.info.status == "RUNNING"
    assert "splits.json" in {item.path for item in client.list_artifacts(parent.info.run_id)}
    record = json.loads((tmp_path / CROSSVAL_RECORD).read_text())
    assert record["run_id"] == parent.info.run_id and record["tracking_uri"] == uri

    summary = tmp_path / "summary.json"
    summary.write_text("{}")
    assert log_cross_validation_summary(tmp_path, {"mean_dice": 0.5}, [summary]) == parent.info.run_id
    done = client.get_run(parent.info.run_id)
    assert done.info.status == "FINISHED" and done.data.metrics["mean_dice"] == 0.5
    assert "summary.json" in {item.path for item in client.list_artifacts(parent.info.run_id)}


def test_a_parent_recorded_by_another_process_is_reused_and_tracking_off_makes_none(tmp_path):
    uri = sqlite(tmp_path)
    (tmp_path / CROSSVAL_RECORD).write_text(json.dumps({"run_id": "abc123", "tracking_uri": uri}))
    assert cross_validation_run(tmp_path, uri, num_folds=3) == "abc123"
    assert not (tmp_path / "mlflow.db").exists()  # nothing created
    assert cross_validation_run(tmp_path / "other", "none", num_folds=3) is None
    assert log_cross_validation_summary(tmp_path / "other", {}, []) is None


def test_a_replaced_split_gets_a_new_parent_run(tmp_path):
    uri = sqlite(tmp_path)
    (tmp_path / "splits.json").write_text(json.dumps({"folds": [{"train": ["a"], "val": ["b"]}]}))
    first = cross_validation_run(tmp_path, uri, num_folds=2)
    assert cross_validation_run(tmp_path, uri, num_folds=2) == first  # the same split: the same parent
    (tmp_path / "splits.json").write_text(json.dumps({"folds": [{"train": ["b"], "val": ["a"]}]}))
    second = cross_validation_run(tmp_path, uri, num_folds=2)
    assert second != first and json.loads((tmp_path / CROSSVAL_RECORD).read_text())["run_id"] == second


def test_a_new_cross_validation_ends_the_unfinished_parent_of_the_old_one(tmp_path):
    from gdlseg.tracking.crossval import abandon_cross_validation_run

    uri = sqlite(tmp_path)
    unfinished = cross_validation_run(tmp_path, uri, num_folds=2)
    abandon_cross_validation_run(tmp_path)
    assert not (tmp_path / CROSSVAL_RECORD).exists()
    assert MlflowClient(uri).get_run(unfinished).info.status == "KILLED"
    finished = cross_validation_run(tmp_path, uri, num_folds=2)
    assert finished != unfinished and log_cross_validation_summary(tmp_path, {"mean_dice": 0.5}, []) == finished
    abandon_cross_validation_run(tmp_path)
    assert MlflowClient(uri).get_run(finished).info.status == "FINISHED"  # a finished one keeps its status
    abandon_cross_validation_run(tmp_path)  # nothing recorded: nothing to do
