"""``gdlseg train``: the wrapper runs the real bundle and maps its options to bundle IDs."""

import json
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gdlseg.data.synthetic import write_dataset
from tests.cli.test_main import gdlseg_command

TINY = ["--roi-size", "32", "32", "16", "--pixdim", "1.5", "1.5", "2.5"]
TINY_SETS = ["--set", "num_workers=0", "--set", "network_def#init_filters=8", "--set", "samples_per_image=1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_dataset")
    write_dataset(root, training=3, test=0, shape=(32, 32, 24), seed=3)
    return root


def gdlseg(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([gdlseg_command(), *arguments], capture_output=True, text=True, timeout=900)


def test_train_runs_the_bundle_and_tracks_one_finished_run(dataset, tmp_path):
    output = tmp_path / "run"
    result = gdlseg(
        "train", "--dataset", str(dataset), "--output", str(output), "--epochs", "1", "--lambda-ce", "0.5", "0.2",
        "--classes", "background", "organ", "vessel", "lesion", "--run-name", "wrapped", *TINY, *TINY_SETS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "-m monai.bundle run" in result.stderr  # the equivalent bundle command is shown for reproducibility
    assert (output / "models" / "model.pt").is_file()
    record = json.loads((output / "models" / "training.json").read_text())
    assert record["class_names"] == ["background", "organ", "vessel", "lesion"]
    client = MlflowClient(f"sqlite:///{output / 'mlflow' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("gdlseg").experiment_id])
    assert run.info.run_name == "wrapped" and run.info.status == "FINISHED"
    assert float(run.data.params["loss.lambda_ce"]) == 0.5
    assert json.loads(run.data.params["loss_schedule.lambda_ce"]) == [0.5, 0.2]
    assert run.data.params["max_epochs"] == "1"


def test_dry_run_prints_the_torchrun_command_for_several_processes(dataset, tmp_path):
    result = gdlseg("train", "--dataset", str(dataset), "--output", str(tmp_path), "--nproc-per-node", "2", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "torch.distributed.run --standalone --nproc_per_node=2" in result.stderr
    assert "multi_gpu_train.yaml" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--class-weights", "1", "heavy"], "--class-weights expects 'auto', 'none' or numbers"),
        (["--set", "no_equals_sign"], "--set expects ID=VALUE"),
        (["--lambda-ce", "0.1", "0.5", "1"], "--lambda-ce takes one value or START END"),
        (["--nproc-per-node", "0"], "--nproc-per-node must be at least 1"),
        (["--model-alias", "champion"], "--model-alias champion needs --register-model NAME"),
        (["--max-minutes", "0"], "--max-minutes must be a positive number of minutes, got 0"),
        (["--early-stopping-patience", "0"], "--early-stopping-patience must be at least 1, got 0"),
        (["--recipe", "gpu_fast"], "invalid choice: 'gpu_fast'"),
    ],
)
def test_bad_options_are_usage_errors(dataset, tmp_path, arguments, message):
    result = gdlseg("train", "--dataset", str(dataset), "--output", str(tmp_path), "--dry-run", *arguments)
    assert result.returncode == 2 and message in result.stderr


def test_the_registry_options_become_bundle_ids(dataset, tmp_path):
    arguments = ["--register-model", "spleen-seg", "--model-alias", "champion", "--dry-run"]
    result = gdlseg("train", "--dataset", str(dataset), "--output", str(tmp_path), *arguments)
    assert result.returncode == 0, result.stderr
    assert "--registered_model_name spleen-seg --registered_model_alias champion" in result.stderr


def test_the_recipe_and_budget_options_become_bundle_ids(dataset, tmp_path):
    arguments = ["--recipe", "standard", "--epochs", "40", "--max-minutes", "30", "--early-stopping-patience", "5"]
    result = gdlseg("train", "--dataset", str(dataset), "--output", str(tmp_path), *arguments, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "--recipe standard --max_epochs 40 --max_minutes 30.0 --early_stopping_patience 5" in result.stderr


def test_missing_dataset_folder_is_a_usage_error(tmp_path):
    result = gdlseg("train", "--dataset", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out"))
    assert result.returncode == 2 and "nowhere" in result.stderr and "not a folder" in result.stderr


def test_a_failing_training_exits_1(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "dataset.json").write_text(json.dumps({"training": []}))
    result = gdlseg("train", "--dataset", str(empty), "--output", str(tmp_path / "out"), "--epochs", "1")
    assert result.returncode == 1 and "the training failed" in result.stderr
    assert not (tmp_path / "out" / "models" / "model.pt").exists()
