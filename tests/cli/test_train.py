"""``gdlseg train``: the wrapper runs the real bundle and maps its options to bundle IDs."""

import json
import shlex
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
        "--tversky", "0.3", "0.7", "--focal-exponent", "0.75", "--classes", "background", "organ", "vessel", "lesion",
        "--run-name", "wrapped", *TINY, *TINY_SETS,
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
    levers = {key: float(run.data.params[f"loss.generalized_dice.{key}"]) for key in ("tversky_alpha", "tversky_beta")}
    assert levers == {"tversky_alpha": 0.3, "tversky_beta": 0.7}
    assert float(run.data.params["loss.generalized_dice.focal_exponent"]) == 0.75


def test_a_plan_sets_the_defaults_an_explicit_option_wins_and_the_run_records_it(dataset, tmp_path):
    plan_file = tmp_path / "plan.json"
    planned = gdlseg("plan", str(dataset), "--output", str(plan_file), "--device", "cpu", "--memory-gb", "16")
    assert planned.returncode == 0, planned.stderr[-4000:]
    plan = json.loads(plan_file.read_text())
    assert plan["settings"]["roi_size"] == [32, 32, 24]  # the phantoms' shape at their own spacing
    output = tmp_path / "run"
    arguments = ["--plan", str(plan_file), "--epochs", "1", "--roi-size", "32", "32", "16", *TINY_SETS]
    result = gdlseg("train", "--dataset", str(dataset), "--output", str(output), *arguments)
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads((output / "models" / "training.json").read_text())
    assert record["roi_size"] == [32, 32, 16]  # the explicit option wins
    assert record["pixdim"] == plan["settings"]["pixdim"] and record["intensity"] == "ct"  # the plan's
    client = MlflowClient(f"sqlite:///{output / 'mlflow' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("gdlseg").experiment_id])
    assert json.loads(run.data.params["plan.roi_size"]) == [32, 32, 24]
    assert (
        run.data.params["plan.max_epochs"] == str(plan["settings"]["max_epochs"])
        and run.data.params["max_epochs"] == "1"
    )
    assert "plan.json" in {item.path for item in client.list_artifacts(run.info.run_id)}


def test_a_plan_for_other_data_stops_before_anything_is_written(dataset, tmp_path):
    plan_file = tmp_path / "plan.json"
    assert gdlseg("plan", str(dataset), "--output", str(plan_file), "--memory-gb", "16").returncode == 0
    plan = json.loads(plan_file.read_text())
    plan.update(num_classes=3, class_names=["background", "organ", "lesion"])
    plan_file.write_text(json.dumps(plan))
    output = tmp_path / "run"
    result = gdlseg("train", "--dataset", str(dataset), "--output", str(output), "--plan", str(plan_file), *TINY_SETS)
    assert result.returncode != 0
    assert "plan plan.json: made for 3 classes (background, organ, lesion), but the dataset has 4" in result.stderr
    assert not (output / "models").exists() and not (output / "mlflow").exists()


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
        (["--tversky", "0", "0"], "--tversky takes two finite weights >= 0, not both 0"),
        (["--tversky", "-0.2", "0.7"], "--tversky takes two finite weights >= 0"),
        (["--focal-exponent", "0"], "--focal-exponent must be a number > 0 (1: off), got 0"),
        (["--plan", "missing.json"], "--plan missing.json: no such file"),
        (["--folds", "1"], "--folds must be at least 2, got 1"),
        (["--folds", "3", "--fold", "3"], "--fold 3 is out of range for 3 folds: 0 to 2"),
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


def test_the_recipe_element_options_become_bundle_ids(dataset, tmp_path):
    arguments = ["--no-deep-supervision", "--augment", "spatial", "low-resolution", "--amp", "false", "--dry-run"]
    result = gdlseg("train", "--dataset", str(dataset), "--output", str(tmp_path), *arguments)
    assert result.returncode == 0, result.stderr
    expected = (
        "--deep_supervision false --augment_spatial true --augment_intensity false --simulate_low_resolution true"
    )
    assert f"{expected} --amp false" in result.stderr
    none = gdlseg("train", "--dataset", str(dataset), "--output", str(tmp_path), "--augment", "none", "--dry-run")
    assert "--augment_spatial false --augment_intensity false --simulate_low_resolution false" in none.stderr


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


def test_the_channel_options_become_bundle_ids(dataset, tmp_path):
    arguments = ["--intensity", "mr", "ct", "--in-channels", "2", "--dry-run"]
    result = gdlseg("train", "--dataset", str(dataset), "--output", str(tmp_path), *arguments)
    assert result.returncode == 0, result.stderr
    command = shlex.split(result.stderr.strip().splitlines()[-1])
    assert command[command.index("--intensity") + 1] == "['mr', 'ct']"  # one preset per channel
    assert command[command.index("--in_channels") + 1] == "2"
    one = gdlseg("train", "--dataset", str(dataset), "--output", str(tmp_path), "--intensity", "mr", "--dry-run")
    command = shlex.split(one.stderr.strip().splitlines()[-1])
    assert command[command.index("--intensity") + 1] == "mr"  # one preset: for every channel, as before


def test_dry_run_prints_one_bundle_command_per_fold(dataset, tmp_path):
    arguments = ["--folds", "3", "--group-key", "site", "--dry-run"]
    result = gdlseg("train", "--dataset", str(dataset), "--output", str(tmp_path), *arguments)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stderr.splitlines() if "-m monai.bundle run" in line]
    assert [(c[c.index("--fold") + 1], c[c.index("--num_folds") + 1]) for c in commands] == [
        ("0", "3"),
        ("1", "3"),
        ("2", "3"),
    ]
    assert all(c[c.index("--group_key") + 1] == "site" for c in commands)
    assert not list(tmp_path.iterdir())
    registered = gdlseg(
        "train", "--dataset", str(dataset), "--output", str(tmp_path), *arguments, "--register-model", "m"
    )
    assert registered.returncode == 2 and "--register-model registers one model" in registered.stderr


def test_folds_train_nested_runs_and_the_out_of_fold_summary_lands_in_the_parent_run(tmp_path):
    """gdlseg train --folds 2 for real: a patient's two scans stay in one fold, each fold its own folder
    and nested MLflow run, every case predicted once out of fold, the summary in the parent run."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    data = tmp_path / "data"
    datalist = write_dataset(data, training=4, test=0, shape=(32, 32, 24), seed=3)
    content = json.loads(datalist.read_text())
    content["training"][1]["patient"] = content["training"][3]["patient"] = "P-0042"
    datalist.write_text(json.dumps(content))
    output = tmp_path / "cv"
    arguments = ["--dataset", str(data), "--output", str(output), "--folds", "2", "--epochs", "1", "--group-key"]
    result = gdlseg("train", *arguments, "patient", *TINY, *TINY_SETS, "--set", "system_metrics=false")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Dice mean ± sd" in result.stdout

    splits = json.loads((output / "splits.json").read_text())
    assert splits["num_folds"] == 2 and splits["group_key"] == "patient" and "P-0042" not in json.dumps(splits)
    validated = {name: fold for fold, entry in enumerate(splits["folds"]) for name in entry["val"]}
    assert sorted(validated) == ["phantom_000", "phantom_001", "phantom_002", "phantom_003"]
    assert validated["phantom_001"] == validated["phantom_003"]  # one patient, one fold
    for fold in (0, 1):
        assert (output / f"fold_{fold}" / "models" / "model.pt").is_file()
        assert (output / f"fold_{fold}" / "reports" / "metrics.csv").is_file()
    assert not (output / "models").exists()

    predictions = sorted(path.name for path in (output / "crossval" / "predictions").glob("*_seg.nii.gz"))
    assert predictions == [f"{name}_seg.nii.gz" for name in sorted(validated)]  # every case exactly once
    summary = json.loads((output / "crossval" / "summary.json").read_text())
    for entry in summary["classes"].values():
        dice = entry["dice"]
        assert dice["cases"] == 4 and dice["ci95"][0] <= dice["mean"] <= dice["ci95"][1] and dice["std"] >= 0
        assert set(entry["nsd"]) == {"mean", "median", "std", "ci95", "cases"}  # the same per-case metrics
    assert [fold["cases"] for fold in summary["cross_validation"]["folds"]] == [2, 2]
    assert all("mean_dice_ci95" in fold for fold in summary["cross_validation"]["folds"])
    decision = json.loads((output / "postprocessing.json").read_text())  # beside the folds, for gdlseg infer
    assert decision["cases"] == 4 and set(decision["evidence"]) == {"organ", "vessel", "lesion"}
    assert summary["cross_validation"]["postprocessing"] == decision["rules"]
    for evidence in decision["evidence"].values():
        none = evidence["candidates"]["none"]
        assert evidence["chosen"] in evidence["candidates"] and 0 <= none["dice_mean"] <= 1
        chosen = evidence["candidates"][evidence["chosen"]]
        assert chosen["dice_mean"] >= none["dice_mean"] and chosen["sensitivity"] >= none["sensitivity"]

    client = MlflowClient(f"sqlite:///{output / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("gdlseg").experiment_id])
    [parent] = [run for run in runs if run.data.tags.get("gdlseg.job") == "crossval"]
    children = [run for run in runs if run.data.tags.get("gdlseg.job") == "train"]
    assert sorted(run.data.tags["fold"] for run in children) == ["0", "1"] and len(runs) == 3
    assert all(run.data.tags[MLFLOW_PARENT_RUN_ID] == parent.info.run_id for run in children)
    assert all(run.info.status == "FINISHED" for run in runs)
    assert parent.data.tags["num_folds"] == "2"
    assert parent.data.metrics["mean_dice"] == pytest.approx(summary["mean_dice"])
    assert parent.data.metrics["dice_organ_ci95_high"] == pytest.approx(summary["classes"]["organ"]["dice"]["ci95"][1])
    if summary["classes"]["organ"]["nsd"]["mean"] is not None:
        assert parent.data.metrics["nsd_organ"] == pytest.approx(summary["classes"]["organ"]["nsd"]["mean"])
    assert {"splits.json", "summary.json", "metrics.csv", "postprocessing.json"} <= {
        item.path for item in client.list_artifacts(parent.info.run_id)
    }

    # --resume: both folds are finished, so nothing trains again; the summary is rewritten in the same parent
    again = gdlseg("train", *arguments, "patient", *TINY, *TINY_SETS, "--resume")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "fold 0 finished earlier: skipped" in again.stderr and "fold 1 finished earlier: skipped" in again.stderr
    assert len(client.search_runs([parent.info.experiment_id])) == 3

    # the folder is the folds' ensemble for gdlseg infer, with the post-processing chosen above
    segmented = tmp_path / "segmented"
    image = data / content["training"][0]["image"]
    infer = gdlseg("infer", "--ckpt", str(output), "--input", str(image), "--output", str(segmented), "--no-tracking")
    assert infer.returncode == 0, infer.stderr[-4000:]
    provenance = json.loads(next(segmented.glob("*_seg.json")).read_text())
    assert len(provenance["checkpoints"]) == 2
    applied = provenance["parameters"]["postprocessing"]
    assert applied == "none" if not decision["rules"] else applied["rules"] == decision["rules"]

    # a replaced split: the folds trained on the old one are neither skipped, resumed, nor ensembled
    splits = json.loads((output / "splits.json").read_text())
    splits["folds"].reverse()
    (output / "splits.json").write_text(json.dumps(splits))
    refused = gdlseg("train", *arguments, "patient", *TINY, *TINY_SETS, "--resume")
    assert refused.returncode == 2 and "fold 0 in" in refused.stderr and "another split" in refused.stderr
    stale = gdlseg("infer", "--ckpt", str(output), "--input", str(image), "--output", str(tmp_path / "x"))
    assert stale.returncode == 2 and "no finished model for fold(s) 0, 1" in stale.stderr
