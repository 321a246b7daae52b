"""Faults during a real ``python -m monai.bundle run`` training: kill -9 and resume, NaN loss, a tracking
server that goes away. What is bit-exact after a resume (CPU, num_workers=0, fixed seed): the model
weights, the optimizer and scheduler state and the validation metrics of the resumed epochs."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import torch

from gdlseg.engines.checkpoints import checkpoint_epoch, latest_checkpoint, load_checkpoint
from gdlseg.tracking import read_spool, replay_spool

from .conftest import (
    assert_same_final_state,
    run_bundle,
    runs_of,
    sqlite_uri,
    start_mlflow_server,
    stop_mlflow_server,
)

# The schedule's length is fixed so that runs with different max_epochs follow the same learning rates.
# Validation every epoch in both runs: val_interval auto would differ with their max_epochs.
SAME_SCHEDULE = {"lr_scheduler#t_total": "40", "val_interval": "1"}

# bf16 autocast on (amp true: on any CPU, native bf16 or not), so that resuming is checked with it too.
MIXED_PRECISION = {"amp": "true"}

# The tests below count iterations: 2 per epoch, as with batches of 2 of the tiny dataset's cases.
TWO_STEPS_PER_EPOCH = {"batch_size": "2"}


def wait_for_a_periodic_checkpoint(models: Path, process, timeout: float = 600) -> None:
    """n_saved=1 replaces the periodic checkpoint each epoch: wait for any of them."""
    deadline = time.time() + timeout
    while not list(models.glob("checkpoint_epoch=*.pt")):
        assert process.poll() is None, process.log_path.read_text()[-4000:]
        assert time.time() < deadline, "no periodic checkpoint appeared"
        time.sleep(0.1)


def train_runs(uri: str):
    client, runs = runs_of(uri)
    return client, sorted(
        (r for r in runs if r.data.tags.get("gdlseg.job") == "train"), key=lambda r: r.info.start_time
    )


def test_kill_9_then_resume_matches_an_uninterrupted_run_bit_for_bit(bundle, dataset, tmp_path):
    interrupted = tmp_path / "interrupted"
    common = {"dataset_dir": dataset, **SAME_SCHEDULE, **MIXED_PRECISION}
    process = run_bundle(
        bundle,
        ["train.yaml"],
        {**common, "output_dir": interrupted, "train#trainer#max_epochs": "1000"},
        background=True,
    )
    wait_for_a_periodic_checkpoint(interrupted / "models", process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    resume_from = latest_checkpoint(interrupted / "models")
    epochs = checkpoint_epoch(resume_from) + 1
    assert "final" not in resume_from  # kill -9 leaves no time for a final checkpoint

    run_bundle(
        bundle,
        ["train.yaml"],
        {**common, "output_dir": interrupted, "resume": "true", "train#trainer#max_epochs": epochs},
    )
    uninterrupted = tmp_path / "uninterrupted"
    run_bundle(bundle, ["train.yaml"], {**common, "output_dir": uninterrupted, "train#trainer#max_epochs": epochs})

    assert_same_final_state(interrupted, uninterrupted)

    # MLflow: the killed run is ended KILLED by the resume, which continues it in a new run.
    client, (killed, continued) = train_runs(sqlite_uri(interrupted))
    assert killed.info.status == "KILLED" and "kill -9" in killed.data.tags["gdlseg.error"]
    assert continued.info.status == "FINISHED"
    assert continued.data.tags["gdlseg.resumed_run_id"] == killed.info.run_id
    assert continued.data.params["resumed_from"] == Path(resume_from).name
    assert continued.data.params["precision"] == killed.data.params["precision"] == "bfloat16"
    [resumed_dice] = client.get_metric_history(continued.info.run_id, "val_mean_dice")
    reference_client, [reference_run] = train_runs(sqlite_uri(uninterrupted))
    reference_dice = reference_client.get_metric_history(reference_run.info.run_id, "val_mean_dice")
    assert (resumed_dice.step, resumed_dice.value) == (epochs, reference_dice[-1].value)


def test_nan_loss_stops_the_training_failed_and_keeps_the_last_good_checkpoint(bundle, dataset, tmp_path):
    """lr 1e30: the warm-up gives lr 0 to the first step, the second step blows the weights up, and the
    loss of the next epoch's first iteration is NaN."""
    output = tmp_path / "out"
    result = run_bundle(
        bundle,
        ["train.yaml"],
        {
            **TWO_STEPS_PER_EPOCH,
            "dataset_dir": dataset,
            "output_dir": output,
            "learning_rate": "1e30",
            "train#trainer#max_epochs": "4",
        },
        check=False,
    )
    assert result.returncode != 0
    models = output / "models"
    message = "The training loss is nan at epoch 2, iteration 3 (1 of 2 in the epoch): training stopped"
    assert message in result.stderr
    assert f"The last good checkpoint is {models / 'checkpoint_epoch=1.pt'}" in result.stderr
    assert not (models / "checkpoint_final.pt").exists()  # nothing written from the diverged state
    kept = load_checkpoint(models / "checkpoint_epoch=1.pt")
    assert all(torch.isfinite(tensor).all() for tensor in kept["model"].values())
    assert latest_checkpoint(models) == str(models / "checkpoint_epoch=1.pt")
    client, [run] = train_runs(sqlite_uri(output))
    assert run.info.status == "FAILED"
    assert run.data.tags["gdlseg.error"].startswith("NonFiniteLossError: The training loss is nan at epoch 2")
    # The failed run keeps what happened before the failure: the epoch-1 history and the best model.
    logged = {item.path for item in client.list_artifacts(run.info.run_id, "reports")}
    assert {"reports/metrics.csv", "reports/training_curves.png"} <= logged
    assert "model.pt" in {item.path for item in client.list_artifacts(run.info.run_id)}
    assert (output / "reports" / "metrics.csv").read_text().splitlines()[1].startswith("1,")


def test_a_tracking_server_lost_mid_run_is_spooled_and_replayed_complete(bundle, dataset, tmp_path):
    server, uri = start_mlflow_server(tmp_path / "server")
    output = tmp_path / "out"
    try:
        process = run_bundle(
            bundle,
            ["train.yaml"],
            {
                **TWO_STEPS_PER_EPOCH,
                "dataset_dir": dataset,
                "output_dir": output,
                "tracking_uri": uri,
                "train#trainer#max_epochs": "6",
            },
            background=True,
        )
        wait_for_a_periodic_checkpoint(output / "models", process)
    finally:
        stop_mlflow_server(server)
    process.wait(timeout=900)
    log = process.log_path.read_text()
    assert process.returncode == 0, log[-4000:]
    record = json.loads((output / "models" / "mlflow_run.json").read_text())
    spool = Path(record["spool"])
    assert spool.parent == output / "mlflow_spool"
    assert "cannot be reached" in log and str(spool) in log
    records = read_spool(spool)
    assert records[0]["op"] == "start" and records[0]["run_id"] == record["run_id"]
    assert records[-1] == {**records[-1], "op": "end", "status": "FINISHED", "sent": False}
    assert any(r["op"] == "metrics" and not r["sent"] for r in records)

    target = f"sqlite:///{tmp_path / 'replayed' / 'mlflow.db'}"
    [run_id] = replay_spool(spool, target)
    client, [run] = runs_of(target)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.tags["gdlseg.replayed_from_run_id"] == record["run_id"]
    assert [p.step for p in client.get_metric_history(run_id, "val_mean_dice")] == [1, 2, 3, 4, 5, 6]
    assert len(client.get_metric_history(run_id, "train_loss")) == 12  # 2 iterations per epoch
    assert run.data.params["max_epochs"] == "6"
    assert "model.pt" in {item.path for item in client.list_artifacts(run_id)}


def test_an_unreadable_case_with_the_data_check_off_fails_cleanly_naming_it(bundle, dataset, tmp_path):
    """MONAI's CacheDataset goes on caching in its threads after a case fails, and the process then
    aborted at exit (code 134) with them still inside torch; gdlseg's exits 1 naming the case."""
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    first_image = data / json.loads((data / "dataset.json").read_text())["training"][0]["image"]
    first_image.write_bytes(b"not a scan")
    output = tmp_path / "out"
    result = run_bundle(
        bundle,
        ["train.yaml"],
        {"dataset_dir": data, "output_dir": output, "check_data": "false"},  # num_workers 0 aborted with MONAI's
        check=False,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    case = first_image.name.removesuffix(".nii.gz")
    assert f"CaseCachingError: case {case} (item " in result.stderr
    assert "terminate called" not in result.stderr
    assert not (output / "models").exists()
