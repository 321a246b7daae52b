"""The segresnet_gdl bundle, run for real through ``python -m monai.bundle run``."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from gdlseg.data.synthetic import make_case
from gdlseg.engines.checkpoints import checkpoint_epoch

from .conftest import free_port, run_bundle, runs_of, sqlite_uri

CLASSES = ["organ", "vessel", "lesion"]


def bundle_files(bundle: Path) -> set[str]:
    return {str(path.relative_to(bundle)) for path in bundle.rglob("*")}


# --- structure --------------------------------------------------------------------------------
def test_check_properties_reports_nothing_missing(bundle, dataset, tmp_path):
    from monai.bundle import ConfigWorkflow

    configs = bundle / "configs"
    overrides = {"dataset_dir": str(dataset), "output_dir": str(tmp_path), "num_workers": 0}
    for files, workflow_type in (
        ([configs / "train.yaml"], "train"),
        ([configs / "train.yaml", configs / "inference.yaml"], "infer"),
    ):
        workflow = ConfigWorkflow(
            config_file=[str(f) for f in files], workflow_type=workflow_type, bundle_root=str(bundle), **overrides
        )
        workflow.initialize()
        assert not workflow.check_properties(), workflow_type


def test_verify_net_in_out(bundle):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "verify_net_in_out",
            "network_def",
            "--meta_file",
            str(bundle / "configs" / "metadata.json"),
            "--config_file",
            str(bundle / "configs" / "train.yaml"),
        ],
        capture_output=True,
        text=True,
        cwd=bundle,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified with no error" in result.stdout + result.stderr


# --- training ---------------------------------------------------------------------------------
def test_training_writes_checkpoints_outside_the_bundle(trained, bundle):
    models = trained / "models"
    state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert "convInit.conv.weight" in state  # a plain state dict of the SegResNet
    final = torch.load(models / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    entries = {"model", "optimizer", "lr_scheduler", "trainer", "rng", "best_model", "early_stopping", "time_budget"}
    assert set(final) == entries
    assert checkpoint_epoch(models / "checkpoint_final.pt") == 2
    record = json.loads((models / "training.json").read_text())
    assert record["class_names"] == ["background", *CLASSES] and record["num_classes"] == 4
    assert record["in_channels"] == 1 and record["channel_names"] == ["CT"]  # one channel, as before
    assert len(record["class_weights"]) == 4
    assert bundle_files(bundle) == bundle_files(Path(__file__).resolve().parents[2] / "bundles" / "segresnet_gdl")


def test_training_run_is_tracked_completely(trained, dataset):
    client, runs = runs_of(sqlite_uri(trained))
    train_runs = [run for run in runs if run.data.tags.get("gdlseg.job") == "train"]
    assert len(train_runs) == 1
    run = train_runs[0]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["loss.class"] == "gdlseg.losses.compound.GeneralizedDiceCELoss"
    assert params["loss.generalized_dice.w_type"] == "square"
    assert params["loss.lambda_ce"] == "1.0"
    assert json.loads(params["loss_schedule.lambda_ce"]) == [1.0, 1.0]  # constant unless [first, last] is given
    assert (
        json.loads(params["class_weights"])
        == json.loads((trained / "models/training.json").read_text())["class_weights"]
    )
    for key in ("optimizer.weight_decay", "schedule.warmup_steps", "data.roi_size", "data.pixdim", "seed"):
        assert key in params, key
    # on a CPU the cpu_fast recipe: its learning rate, its batch, channels-last weights (docs/bundle.md#recipes)
    assert params["recipe.name"] == "cpu_fast" and params["recipe.channels_last"] == "True"
    assert params["optimizer.class"] == "torch.optim.adamw.AdamW" and float(params["optimizer.lr"]) == 3.0e-3
    assert params["data.batch_size"] == "1" and params["budget.max_epochs"] == "auto"
    assert run.data.tags["gdlseg.stopped_by"] == "max_epochs" and run.data.metrics["epochs_completed"] == 2.0
    assert params["schedule.class"] == "monai.optimizers.lr_scheduler.WarmupCosineSchedule"
    assert params["network.class"] == "monai.networks.nets.segresnet.SegResNet"
    assert params["max_epochs"] == "2" and params["network.init_filters"] == "8"
    tags = run.data.tags
    for key in ("gdlseg.version", "monai.version", "torch.version", "dataset.datalist_sha256", "bundle.version"):
        assert key in tags, key
    assert tags["dataset.training_cases"] == "4"
    everything = json.dumps({**params, **tags})
    assert str(dataset) not in everything and "phantom_" not in everything  # no paths, no case names
    metrics = run.data.metrics
    assert {f"val_dice_{name}" for name in CLASSES} | {"val_mean_dice", "train_loss", "learning_rate"} <= set(metrics)
    assert len(client.get_metric_history(run.info.run_id, "val_dice_lesion")) == 2  # one per epoch
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    artifacts |= {item.path for item in client.list_artifacts(run.info.run_id, "reports")}
    for name in (
        "model.pt",
        "training.json",
        "reports/metrics.csv",
        "reports/training_curves.png",
        "reports/class_distribution.png",
        "reports/executed_config.yaml",
    ):
        assert name in artifacts, name
    assert "reports/overlay_validation_case1.png" in artifacts
    record = json.loads((trained / "models" / "mlflow_run.json").read_text())
    assert record["run_id"] == run.info.run_id


def test_resume_continues_the_epoch_count(trained, bundle, dataset, tmp_path):
    output = tmp_path / "resumed"
    shutil.copytree(trained, output)
    result = run_bundle(
        bundle,
        ["train.yaml"],
        {"dataset_dir": dataset, "output_dir": output, "resume": "true", "train#trainer#max_epochs": "3"},
    )
    assert "train[1/" in result.stderr and "validate[1/" in result.stderr  # console progress bars
    assert checkpoint_epoch(output / "models" / "checkpoint_final.pt") == 3
    client, runs = runs_of(sqlite_uri(output))
    train_runs = sorted((r for r in runs if r.data.tags.get("gdlseg.job") == "train"), key=lambda r: r.info.start_time)
    assert len(train_runs) == 2 and train_runs[0].info.run_id != train_runs[1].info.run_id  # never reused
    resumed = train_runs[1]
    assert resumed.info.status == "FINISHED"
    assert resumed.data.params["resumed_from"] == "checkpoint_final.pt"
    history = client.get_metric_history(resumed.info.run_id, "val_mean_dice")
    assert [point.step for point in history] == [3]
    epochs = [line.split(",")[0] for line in (output / "reports" / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]  # the resumed run keeps the history of the epochs before it
    # The best score travels in the full checkpoints, so model.pt changes only on a better one.
    best_before = max(p.value for p in client.get_metric_history(train_runs[0].info.run_id, "val_mean_dice"))
    final = torch.load(output / "models" / "checkpoint_final.pt", weights_only=True)
    [(best_score, _)] = final["best_model"]["_saved"]
    assert best_score == pytest.approx(max(best_before, history[0].value), abs=1e-4)


# --- evaluation and inference -----------------------------------------------------------------
def test_evaluate_writes_per_case_per_class_dice(trained, bundle, dataset):
    result = run_bundle(bundle, ["train.yaml", "evaluate.yaml"], {"dataset_dir": dataset, "output_dir": trained})
    assert "evaluate[1/" in result.stderr  # console progress bar
    lines = (trained / "evaluation" / "per_case_dice.csv").read_text().splitlines()
    assert lines[0] == "case,organ,vessel,lesion"
    assert len(lines) == 2 and lines[1].startswith("phantom_")
    summary = json.loads((trained / "evaluation" / "summary.json").read_text())
    assert set(summary["lesion"]) == {"mean", "median", "std", "ci95", "cases"}
    _, runs = runs_of(sqlite_uri(trained))
    train_id = json.loads((trained / "models" / "mlflow_run.json").read_text())["run_id"]
    evaluations = [r for r in runs if r.data.tags.get("gdlseg.job") == "evaluate"]
    assert evaluations and all(r.info.status == "FINISHED" for r in evaluations)
    assert evaluations[0].data.tags["gdlseg.training_run_id"] == train_id
    assert "val_dice_lesion" in evaluations[0].data.metrics


def _oblique_lps_anisotropic(folder: Path) -> dict[str, sitk.Image]:
    """Scans of the same phantom stored in several geometries, each read back with SimpleITK."""
    image, _, affine = make_case((30, 28, 20), seed=7)
    folder.mkdir(parents=True, exist_ok=True)
    cases = {}
    nib.save(nib.Nifti1Image(image, affine), folder / "oblique.nii.gz")
    ras = np.diag([0.8, 0.8, 3.0, 1.0])
    nib.save(nib.Nifti1Image(image, ras), folder / "anisotropic_ras.nii.gz")
    lps = sitk.GetImageFromArray(np.transpose(image, (2, 1, 0)))
    lps.SetSpacing((1.2, 0.9, 2.0))
    lps.SetOrigin((10.0, -20.0, 35.0))
    lps.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))  # identity in LPS
    sitk.WriteImage(lps, str(folder / "lps.nrrd"))
    for name in ("oblique.nii.gz", "anisotropic_ras.nii.gz", "lps.nrrd"):
        cases[name.split(".")[0]] = sitk.ReadImage(str(folder / name))
    return cases


def test_inference_keeps_each_input_geometry(trained, bundle, tmp_path):
    inputs = tmp_path / "scans"
    cases = _oblique_lps_anisotropic(inputs)
    output = tmp_path / "inference"
    shutil.copytree(trained / "models", output / "models")
    # amp "false" arrives as a string, which Python finds true; the bundle must read it as off.
    result = run_bundle(
        bundle, ["train.yaml", "inference.yaml"], {"input": inputs, "output_dir": output, "amp": "false"}
    )
    assert "infer[1/" in result.stderr  # console progress bar
    for name, source in cases.items():
        prediction = sitk.ReadImage(str(output / "predictions" / f"{name}_seg.nii.gz"))
        assert prediction.GetSize() == source.GetSize(), name
        np.testing.assert_allclose(prediction.GetSpacing(), source.GetSpacing(), atol=1e-4, err_msg=name)
        np.testing.assert_allclose(prediction.GetOrigin(), source.GetOrigin(), atol=1e-3, err_msg=name)
        np.testing.assert_allclose(prediction.GetDirection(), source.GetDirection(), atol=1e-5, err_msg=name)
        assert prediction.GetPixelID() == sitk.sitkUInt8
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2, 3}
    _, runs = runs_of(sqlite_uri(output))
    infer = [r for r in runs if r.data.tags.get("gdlseg.job") == "infer"]
    assert len(infer) == 1 and infer[0].info.status == "FINISHED"
    assert "gdlseg.training_run_id" in infer[0].data.tags


def test_torchscript_export_matches_the_network(trained, bundle, tmp_path):
    exported = tmp_path / "model.ts"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "ckpt_export",
            "network_def",
            "--filepath",
            str(exported),
            "--ckpt_file",
            str(trained / "models" / "model.pt"),
            "--meta_file",
            str(bundle / "configs" / "metadata.json"),
            "--config_file",
            str(bundle / "configs" / "train.yaml"),
            "--network_def#init_filters",
            "8",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from monai.networks.nets import SegResNet

    network = SegResNet(  # trained on a CPU: the cpu_fast recipe's batch norm
        spatial_dims=3,
        in_channels=1,
        out_channels=4,
        init_filters=8,
        blocks_down=[1, 2, 2, 4],
        blocks_up=[1, 1, 1],
        norm="BATCH",
    )
    network.load_state_dict(torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True))
    network.eval()
    scripted = torch.jit.load(str(exported))
    volume = torch.rand(1, 1, 32, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(volume), network(volume), rtol=1e-4, atol=1e-5)


# --- run status -------------------------------------------------------------------------------
def test_a_failing_training_ends_its_run_failed(bundle, dataset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    image = broken / "imagesTr" / "phantom_000.nii.gz"
    image.write_bytes(image.read_bytes()[:200])  # truncated gzip: fails when first loaded
    output = tmp_path / "out"
    result = run_bundle(
        bundle,
        ["train.yaml"],
        # check_data off: the preflight would refuse this dataset before any run exists (see test_preflight.py)
        {"dataset_dir": broken, "output_dir": output, "cache_rate": "0", "val_fraction": "0.25", "check_data": "false"},
        check=False,
    )
    assert result.returncode != 0
    _, runs = runs_of(sqlite_uri(output))
    assert [run.info.status for run in runs] == ["FAILED"]
    assert "gdlseg.error" in runs[0].data.tags


def test_sigterm_ends_the_run_killed_and_saves_a_checkpoint(bundle, dataset, tmp_path):
    output = tmp_path / "out"
    process = run_bundle(
        bundle,
        ["train.yaml"],
        {"dataset_dir": dataset, "output_dir": output, "train#trainer#max_epochs": "100000"},
        background=True,
    )
    record = output / "models" / "mlflow_run.json"
    deadline = time.time() + 300
    # n_saved=1: each epoch's checkpoint replaces the previous one, so look for any of them.
    while not list((output / "models").glob("checkpoint_epoch=*.pt")) and time.time() < deadline:
        time.sleep(0.2)
    assert record.exists(), process.log_path.read_text()[-4000:]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    assert process.returncode != 0
    _, runs = runs_of(sqlite_uri(output))
    assert [run.info.status for run in runs] == ["KILLED"]
    assert 1 <= checkpoint_epoch(output / "models" / "checkpoint_final.pt") < 100000


# --- a real tracking server -------------------------------------------------------------------
def test_two_concurrent_trainings_on_a_server_give_two_complete_runs(bundle, dataset, tmp_path, mlflow_server):
    processes = [
        run_bundle(
            bundle,
            ["train.yaml"],
            {
                "dataset_dir": dataset,
                "output_dir": tmp_path / f"run{i}",
                "tracking_uri": mlflow_server,
                "experiment_name": "concurrent",
            },
            background=True,
        )
        for i in range(2)
    ]
    for process in processes:
        process.wait(timeout=900)
        assert process.returncode == 0, process.log_path.read_text()[-4000:]
    client, runs = runs_of(mlflow_server, "concurrent")
    assert len(runs) == 2 and len({run.info.run_name for run in runs}) == 2
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "val_mean_dice")) == 2
        assert "model.pt" in {item.path for item in client.list_artifacts(run.info.run_id)}
        # Both log the same datalist at the same moment: MLflow's store can collide on the dataset's key.
        assert len(client.get_run(run.info.run_id).inputs.dataset_inputs) == 1


def test_unreachable_server_does_not_stop_training(bundle, dataset, tmp_path):
    output = tmp_path / "out"
    result = run_bundle(
        bundle,
        ["train.yaml"],
        {"dataset_dir": dataset, "output_dir": output, "tracking_uri": f"http://127.0.0.1:{free_port()}"},
    )
    assert "cannot be reached" in result.stdout + result.stderr
    assert (output / "models" / "checkpoint_final.pt").is_file()


@pytest.mark.parametrize("name", ["train.yaml", "evaluate.yaml", "inference.yaml"])
def test_configs_are_commented_yaml(bundle, name):
    text = (bundle / "configs" / name).read_text()
    assert text.startswith("#")


def test_default_output_folder_inside_the_bundle_is_refused(bundle, dataset):
    """Run from the bundle folder without --output_dir: the default ./outputs would land in the bundle."""
    files = [str(bundle / "configs" / "train.yaml")]
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(files), "--dataset_dir", str(dataset)],
        capture_output=True,
        text=True,
        cwd=bundle,
        timeout=300,
    )
    assert result.returncode != 0
    assert "is inside the bundle folder" in result.stderr
    assert not (bundle / "outputs").exists()
