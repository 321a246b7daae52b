"""The bundle's training budgets, run for real: derived epochs, max_minutes and early stopping, each
recorded in the MLflow run (why it stopped, how many epochs ran, the settings as params)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from monai.bundle import ConfigParser

from gdlseg.engines.budget import training_epochs, validation_interval

from .conftest import BUNDLE, run_bundle, runs_of, sqlite_uri


def train_run(output: Path) -> tuple[MlflowClient, Run]:
    client, runs = runs_of(sqlite_uri(output))
    (run,) = [run for run in runs if run.data.tags.get("gdlseg.job") == "train"]
    return client, run


def test_auto_epochs_and_validation_interval_follow_the_data_and_the_device(dataset, tmp_path):
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser.update({"dataset_dir": str(dataset), "output_dir": str(tmp_path), "num_workers": 0, "check_data": False})
    steps_per_epoch = len(parser.get_parsed_content("train#dataloader"))
    epochs = parser.get_parsed_content("train#trainer#max_epochs")
    assert epochs == training_epochs("auto", steps_per_epoch, "cpu") == min(1000, -(-1500 // steps_per_epoch))
    assert parser.get_parsed_content("validation_every") == validation_interval("auto", epochs) == max(1, epochs // 20)
    # the schedule spans the derived run, and the CPU recipe is what a CPU trains with
    assert parser.get_parsed_content("lr_scheduler").t_total == epochs * steps_per_epoch
    assert parser.get_parsed_content("recipe_settings")["name"] == "cpu_fast"
    network = parser.get_parsed_content("network")
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in network.parameters() if p.dim() == 5)


def test_max_minutes_ends_the_run_validated_and_says_why(bundle, dataset, tmp_path):
    output = tmp_path / "out"
    overrides = {"train#trainer#max_epochs": "50", "max_minutes": "0.001", "dataset_dir": dataset, "output_dir": output}
    run_bundle(bundle, ["train.yaml"], overrides)
    client, run = train_run(output)
    assert run.info.status == "FINISHED"
    assert run.data.tags["gdlseg.stopped_by"] == "time_limit"
    assert run.data.metrics["epochs_completed"] == 1.0
    assert run.data.params["budget.max_minutes"] == "0.001"
    # the interval (50 // 20 = every 2nd epoch) would have skipped epoch 1: it was validated anyway
    assert len(client.get_metric_history(run.info.run_id, "val_mean_dice")) == 1
    assert (output / "models" / "model.pt").is_file()
    assert json.loads((output / "models" / "training.json").read_text())["norm"] == "batch"


def test_early_stopping_stops_on_a_plateau(bundle, dataset, tmp_path):
    output, patience = tmp_path / "out", 1
    # lr 0 and group norm (no running statistics, which batch norm would update): the network never changes,
    # so the validation Dice never improves after the first validation
    overrides = {
        "train#trainer#max_epochs": "6",
        "val_interval": "1",
        "early_stopping_patience": str(patience),
        "learning_rate": "0.0",
        "norm": "group",
        "dataset_dir": dataset,
        "output_dir": output,
    }
    run_bundle(bundle, ["train.yaml"], overrides)
    _, run = train_run(output)
    assert run.data.tags["gdlseg.stopped_by"] == "early_stopping"
    assert run.data.metrics["epochs_completed"] == 1.0 + patience
    assert run.data.params["budget.early_stopping_patience"] == str(patience)
    assert run.data.params["recipe.name"] == "cpu_fast" and run.data.params["val_interval"] == "1"
