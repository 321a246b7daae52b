"""The training report on real Ignite engines: its history survives failures and resumes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from mlflow.tracking import MlflowClient

from gdlseg.engines.mlflow_handler import MLflowTracker
from gdlseg.engines.reports import TrainingReport


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def trainer(fail_at_epoch: int | None = None) -> Engine:
    """An engine whose iterations output what a MONAI trainer's do (decollated dicts with the loss)."""

    def step(engine: Engine, batch: int) -> list[dict[str, torch.Tensor]]:
        if engine.state.epoch == fail_at_epoch:
            raise RuntimeError("out of memory")
        return [{"loss": torch.tensor(1.0 / engine.state.epoch)}]

    return Engine(step)


def only_run_id(folder: Path) -> str:
    """The id of the only run in ``folder``'s store (the tracker forgets it once the run has ended)."""
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("gdlseg").experiment_id])
    return run.info.run_id


def validator() -> Engine:
    """An engine whose output and metrics are shaped as a MONAI evaluator's."""
    case = {"image": torch.rand(1, 8, 8, 8), "label": torch.zeros(1, 8, 8, 8), "pred": torch.rand(2, 8, 8, 8)}
    engine = Engine(lambda engine, batch: [case] * batch)
    engine.add_event_handler(Events.COMPLETED, lambda e: e.state.metrics.update(val_mean_dice=0.5))
    return engine


def test_a_failed_training_keeps_its_history_and_its_failed_run_gets_the_reports(tmp_path):
    engine, evaluator = trainer(fail_at_epoch=3), validator()
    report = TrainingReport(tmp_path, evaluator, class_names=["background", "organ"], class_volumes=[90, 10])
    report.attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([2, 2]))  # 4 cases
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MLflowTracker(tmp_path, job="train", tracking_uri=uri, artifacts=[report.files])
    tracker.attach(engine)
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.run([0, 1], max_epochs=5)

    rows = rows_of(tmp_path / "reports" / "metrics.csv")
    assert [(row["epoch"], row["val_mean_dice"]) for row in rows] == [("1", "0.5"), ("2", "0.5")]
    assert (tmp_path / "reports" / "training_curves.png").is_file()
    overlays = sorted(path.name for path in (tmp_path / "reports").glob("overlay*"))
    assert overlays == [f"overlay_validation_case{number}.png" for number in (1, 2, 3)]  # the first 3 of 4
    client = MlflowClient(uri)
    run = client.get_run(only_run_id(tmp_path))
    assert run.info.status == "FAILED"
    logged = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"metrics.csv", "training_curves.png", "class_distribution.png", "overlay_validation_case1.png"} <= logged


def test_a_resumed_training_keeps_the_rows_of_the_epochs_before_it(tmp_path):
    first = trainer()
    TrainingReport(tmp_path).attach(first)
    first.run([0, 1], max_epochs=3)
    losses_before = [row["train_loss"] for row in rows_of(tmp_path / "reports" / "metrics.csv")]
    assert len(losses_before) == 3

    resumed = trainer()
    TrainingReport(tmp_path).attach(resumed)
    resumed.load_state_dict({"epoch": 2, "epoch_length": 2, "max_epochs": 3})  # as from checkpoint_epoch2
    resumed.run([0, 1], max_epochs=4)
    rows = rows_of(tmp_path / "reports" / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4"]
    assert [row["train_loss"] for row in rows[:2]] == losses_before[:2]  # epochs before the resume point kept
    assert float(rows[3]["train_loss"]) == pytest.approx(0.25)

    finished = trainer()
    TrainingReport(tmp_path).attach(finished)
    finished.load_state_dict({"epoch": 4, "epoch_length": 2, "max_epochs": 4})
    finished.run([0, 1], max_epochs=4)  # nothing left to train: the history is left as it was
    assert rows_of(tmp_path / "reports" / "metrics.csv") == rows
