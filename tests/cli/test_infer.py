"""``gdlseg infer`` end to end through the console script, on tiny scans and a tiny checkpoint."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from mlflow.tracking import MlflowClient
from monai.networks.nets import UNet

from gdlseg.cli.main import main
from tests.cli.test_main import gdlseg_command
from tests.cli.training_records import record_a_finished_training
from tests.data.channels import write_channel_dataset
from tests.data.dicom import write_dicom_series
from tests.inference.checkpoints import CLASS_NAMES, recorded_ranges, write_checkpoint, write_folds
from tests.inference.dicom_seg_checks import assert_seg_equals_label_map
from tests.inference.scans import box_volume, write_geometry_cases


def gdlseg(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [gdlseg_command(), *map(str, arguments)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
        env=env,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("model"), run_id="training-run-7")


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, Path]:
    return write_geometry_cases(tmp_path_factory.mktemp("scans"))


def test_a_batch_with_a_corrupt_file_finishes_the_others_and_tracks_one_run(checkpoint, scans, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(scans["oblique"], inputs)
    shutil.copytree(scans["dicom_series"], inputs / "ct_series")
    (inputs / "corrupt.nrrd").write_bytes(b"NRRD0004\ngarbage")
    output = tmp_path / "out"
    result = gdlseg("infer", "--ckpt", checkpoint, "--input", inputs, "--output", output, "--run-name", "batch")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "2 of 3 case(s) segmented" in result.stderr and "failed: corrupt:" in result.stderr
    assert "infer: 100%" in result.stderr  # console progress bar
    assert "nvImageCodec" not in result.stderr  # MONAI's GPU DICOM reader's noise (gdlseg/__init__.py)
    for case, source in (("oblique", scans["oblique"]), ("ct_series", scans["dicom_series"])):
        labels = sitk.ReadImage(str(output / f"{case}_seg.nii.gz"))
        reference = sitk.ImageSeriesReader() if source.is_dir() else None
        if reference is not None:
            reference.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(source)))
        image = reference.Execute() if reference is not None else sitk.ReadImage(str(source))
        # In memory the grids are equal (tests/inference/test_geometry.py); NIfTI stores them in float32.
        assert labels.GetSize() == image.GetSize()
        for read in ("GetSpacing", "GetOrigin", "GetDirection"):
            np.testing.assert_allclose(getattr(labels, read)(), getattr(image, read)(), rtol=0, atol=1e-5)
        assert json.loads((output / f"{case}_seg.json").read_text())["case"] == case
    assert not list(output.glob("corrupt*")) and not list(output.glob(".*tmp*"))
    client = MlflowClient(f"sqlite:///{output / 'mlflow' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("gdlseg").experiment_id])
    assert run.info.run_name == "batch" and run.info.status == "FINISHED"
    assert run.data.tags["gdlseg.job"] == "infer"
    assert run.data.tags["gdlseg.training_run_id"] == "training-run-7"
    assert run.data.tags["gdlseg.failed_cases"] == "corrupt"
    assert run.data.metrics["cases_segmented"] == 2 and run.data.metrics["cases_failed"] == 1
    assert run.data.params["overlap"] == "0.25" and run.data.params["checkpoint"] == "model.pt"
    assert str(tmp_path) not in json.dumps(run.data.params) + json.dumps(run.data.tags)


def trained_with_store(folder: Path) -> tuple[Path, str, str, str]:
    """(checkpoint, store URI, experiment id, training run id) of a training recorded in a real store."""
    training = record_a_finished_training(folder)
    checkpoint = write_checkpoint(training.models)  # training.json beside it; mlflow_run.json kept
    return checkpoint, training.tracking_uri, training.experiment_id, training.run_id


def test_the_run_lands_in_the_trainings_store_away_from_the_label_maps(scans, tmp_path):
    checkpoint, uri, experiment, training_run_id = trained_with_store(tmp_path / "training")
    output = tmp_path / "predictions"
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    result = gdlseg(
        "infer", "--ckpt", checkpoint, "--input", scans["ras_anisotropic"], "--output", output, env=environment
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(uri)
    [run] = [run for run in client.search_runs([experiment]) if run.data.tags.get("gdlseg.job") == "infer"]
    assert run.info.status == "FINISHED" and run.data.tags["gdlseg.training_run_id"] == training_run_id
    assert sorted(path.name for path in output.iterdir()) == [
        "quality.json", "ras_anisotropic_seg.json", "ras_anisotropic_seg.nii.gz", "ras_anisotropic_stats.json",
        "statistics.csv",
    ]  # fmt: skip


def test_mlflow_tracking_uri_from_the_environment_comes_before_the_trainings_store(scans, tmp_path):
    checkpoint, training_uri, experiment, _ = trained_with_store(tmp_path / "training")
    chosen = f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}"
    (tmp_path / "team").mkdir()
    output = tmp_path / "predictions"
    environment = {**os.environ, "MLFLOW_TRACKING_URI": chosen}
    result = gdlseg(
        "infer", "--ckpt", checkpoint, "--input", scans["ras_anisotropic"], "--output", output, env=environment
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(chosen)
    [run] = client.search_runs([client.get_experiment_by_name("liver").experiment_id])
    assert run.data.tags["gdlseg.job"] == "infer"
    assert [run.data.tags.get("gdlseg.job") for run in MlflowClient(training_uri).search_runs([experiment])] == [None]
    assert not (output / "mlflow").exists()


def test_datalist_input_without_tracking(checkpoint, scans, tmp_path):
    datalist = tmp_path / "dataset.json"
    datalist.write_text(json.dumps({"training": [{"image": "x.nrrd", "label": "y.nrrd"}], "test": ["lps.nrrd"]}))
    output = tmp_path / "out"
    result = gdlseg(
        "infer", "--ckpt", checkpoint, "--input", datalist, "--dataset-dir", scans["lps"].parent,
        "--output", output, "--no-tracking", "--save-probabilities", "--sw-batch-size", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in output.iterdir()) == [
        "lps_probabilities.npz", "lps_seg.json", "lps_seg.nii.gz", "lps_stats.json", "quality.json", "statistics.csv",
    ]  # fmt: skip


def test_a_folder_with_two_dicom_series_asks_for_one(checkpoint, tmp_path):
    folder = tmp_path / "two_series"
    volume = np.transpose(box_volume(), (2, 1, 0))
    write_dicom_series(folder, volume, series_uid="1.2.3.4.1")
    write_dicom_series(folder / "second", volume[:, ::-1], series_uid="1.2.3.4.2")
    for path in (folder / "second").iterdir():
        path.rename(folder / f"b_{path.name}")
    output = tmp_path / "out"
    result = gdlseg("infer", "--ckpt", checkpoint, "--input", folder, "--output", output, "--no-tracking")
    assert result.returncode == 1
    assert "1.2.3.4.1" in result.stderr and "1.2.3.4.2" in result.stderr and "--series-uid" in result.stderr
    chosen = gdlseg(
        "infer",
        "--ckpt",
        checkpoint,
        "--input",
        folder,
        "--output",
        output,
        "--no-tracking",
        "--series-uid",
        "1.2.3.4.2",
    )
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    provenance = (output / "two_series_seg.json").read_text()
    assert "DOE" not in provenance and "PID-0042" not in provenance and "1.2.3.4" not in provenance


# The refusals below run gdlseg's main() in this process (the same code the console script runs).
def infer_in_process(capsys, *arguments) -> tuple[int, str]:
    code = main(["infer", *map(str, arguments)])
    return code, capsys.readouterr().err


def test_fail_on_flags_counts_a_flagged_case_as_failed_and_keeps_its_outputs(scans, tmp_path, capsys):
    # training saw slices of 1 to 2 mm: ras_anisotropic's 3 mm slices are flagged, lps's 2 mm ones are not
    ranges = recorded_ranges(spacing=([0.5, 0.5, 1.0], [2.0, 2.0, 2.0]))
    checkpoint = write_checkpoint(tmp_path / "model", run_id="training-run-3", training_ranges=ranges)
    inputs = ["--input", scans["ras_anisotropic"], scans["lps"]]
    output = tmp_path / "out"
    code, stderr = infer_in_process(capsys, "--ckpt", checkpoint, *inputs, "--output", output, "--fail-on-flags")
    assert code == 1, stderr[-3000:]
    assert "2 of 2 case(s) segmented" in stderr
    assert (
        "  flagged: ras_anisotropic: spacing_out_of_range: voxel size along S (z) is 3 mm, outside 1 to 2 mm in"
        in stderr
    )
    assert "1 case(s) flagged by the quality checks (quality.json); counted as failed (--fail-on-flags)" in stderr
    assert {"ras_anisotropic_seg.nii.gz", "ras_anisotropic_seg.json", "lps_seg.nii.gz"} <= {
        p.name for p in output.iterdir()
    }
    quality = json.loads((output / "quality.json").read_text())
    assert [(case["case"], case["flagged"]) for case in quality["cases"]] == [("ras_anisotropic", True), ("lps", False)]
    assert quality["cases_with_flag"]["spacing_out_of_range"] == 1 and quality["cases_flagged"] == 1
    flags = json.loads((output / "ras_anisotropic_seg.json").read_text())["quality"]["flags"]
    assert [(flag["code"], flag["axis"]) for flag in flags] == [("spacing_out_of_range", "S")]

    client = MlflowClient(f"sqlite:///{output / 'mlflow' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("gdlseg").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["fail_on_flags"] == "True"
    assert run.data.metrics["cases_flagged"] == 1 and run.data.metrics["cases_flagged_spacing_out_of_range"] == 1
    assert run.data.metrics["cases_flagged_class_missing"] == 0 and 0 <= run.data.metrics["uncertainty_mean"] <= 1
    assert run.data.tags["gdlseg.flagged_cases"] == "ras_anisotropic"
    artifact = client.download_artifacts(run.info.run_id, "quality.json", str(tmp_path))
    assert json.loads(Path(artifact).read_text()) == quality
    assert str(tmp_path) not in Path(artifact).read_text()

    without = tmp_path / "without"  # the same flags, reported only
    code, stderr = infer_in_process(capsys, "--ckpt", checkpoint, *inputs, "--output", without, "--no-tracking")
    assert code == 0 and "1 case(s) flagged by the quality checks (quality.json)\n" in stderr


def test_an_output_folder_that_cannot_be_written_is_a_usage_error(checkpoint, scans, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, stderr = infer_in_process(capsys, "--ckpt", checkpoint, "--input", scans["lps"], "--output", blocker / "out")
    assert code == 2 and f"--output {blocker / 'out'}: cannot write there" in stderr


def test_a_checkpoint_of_another_architecture_fails_before_writing_anything(scans, tmp_path, capsys):
    unet = UNet(spatial_dims=3, in_channels=1, out_channels=4, channels=(8, 16), strides=(2,))
    torch.save(unet.state_dict(), tmp_path / "unet.pt")
    output = tmp_path / "out"
    code, stderr = infer_in_process(capsys, "--ckpt", tmp_path / "unet.pt", "--input", scans["lps"], "--output", output)
    assert code == 1 and "unet.pt does not fit the bundle's network (SegResNet)" in stderr
    assert not output.exists()


def test_a_class_count_other_than_the_checkpoints_is_refused(checkpoint, scans, tmp_path, capsys):
    output = tmp_path / "out"
    code, stderr = infer_in_process(
        capsys, "--ckpt", checkpoint, "--input", scans["lps"], "--output", output, "--num-classes", "7"
    )
    assert code == 1 and "has 4 output channels (classes) but --class-names/--num-classes says 7" in stderr
    assert not output.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--overlap", "1"], "--overlap must lie in [0, 1)"),
        (["--sw-batch-size", "0"], "--sw-batch-size must be at least 1"),
        (["--device", "cuda:0"], "CUDA is not available"),
        (["--ckpt", "missing.pt"], "--ckpt missing.pt: no such file"),
    ],
)
def test_bad_options_are_usage_errors(checkpoint, scans, tmp_path, capsys, arguments, message):
    base = {"--ckpt": checkpoint, "--input": scans["lps"], "--output": tmp_path / "o"}
    base.update(dict(zip(arguments[::2], arguments[1::2])))
    code, stderr = infer_in_process(capsys, *[item for pair in base.items() for item in pair])
    assert code == 2 and message in stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "s3://bucket/model"], "expected models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model"),
        (["--model", "models:/seg@champion"], "give the store with --tracking-uri or $MLFLOW_TRACKING_URI"),
        (["--model", "models:/seg", "--tracking-uri", "sqlite:///{tmp}/m.db"], "expected models:/NAME@ALIAS"),
        (["--model", "models:/seg@champion", "--tracking-uri", "sqlite:///{tmp}/m.db"], "seg"),
    ],
)
def test_a_bad_model_uri_is_a_usage_error(scans, tmp_path, capsys, monkeypatch, arguments, message):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    arguments = [item.format(tmp=tmp_path) for item in arguments]
    code, stderr = infer_in_process(capsys, *arguments, "--input", scans["lps"], "--output", tmp_path / "o")
    assert code == 2 and f"--model {arguments[1]}" in stderr and message in stderr
    assert not (tmp_path / "o").exists()


def test_a_datalist_of_channel_lists_is_segmented_with_every_channel_hashed(tmp_path):
    data, output = tmp_path / "data", tmp_path / "out"
    write_channel_dataset(data, "files", training=1, test=1)
    checkpoint = write_checkpoint(tmp_path / "model", channel_names=["CT", "T2"])
    arguments = ["--input", data / "dataset.json", "--dataset-dir", data, "--output", output, "--no-tracking"]
    assert main(["infer", "--ckpt", str(checkpoint), *map(str, arguments)]) == 0
    provenance = json.loads((output / "case_001_seg.json").read_text())
    channels = [data / "imagesTs" / f"case_001_{channel:04d}.nii.gz" for channel in (0, 1)]
    assert provenance["input"]["channel_sha256"] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in channels]
    assert provenance["channels"] == {"count": 2, "names": ["CT", "T2"]}
    assert sitk.ReadImage(str(output / "case_001_seg.nii.gz")).GetSize() == sitk.ReadImage(str(channels[0])).GetSize()


# --- DICOM SEG -------------------------------------------------------------------------------------
def test_a_dicom_seg_is_written_beside_the_nifti_and_a_non_dicom_input_is_a_usage_error(
    checkpoint, scans, tmp_path, capsys
):
    output, series = tmp_path / "out", scans["dicom_series"]
    common = ["--ckpt", checkpoint, "--output", output, "--no-tracking"]
    code, stderr = infer_in_process(capsys, *common, "--input", series, scans["lps"], "--output-format", "dicom-seg")
    assert code == 2, stderr
    assert (
        "--output-format dicom-seg: a DICOM SEG is made for DICOM series folders only; not DICOM series: lps (lps.nrrd)"
        in stderr
    )
    assert not output.exists()
    code, stderr = infer_in_process(capsys, *common, "--input", series, "--output-format", "both")
    assert code == 0, stderr
    assert sorted(path.name for path in output.iterdir()) == [
        "dicom_series_seg.dcm", "dicom_series_seg.json", "dicom_series_seg.nii.gz", "dicom_series_stats.json",
        "quality.json", "statistics.csv",
    ]  # fmt: skip
    labels = sitk.ReadImage(str(output / "dicom_series_seg.nii.gz"))
    assert_seg_equals_label_map(output / "dicom_series_seg.dcm", series, labels, CLASS_NAMES)


# --- fold ensembles ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folds(tmp_path_factory) -> Path:
    """A cross-validation's output: fold_<k>/models/model.pt (weights of their own), training.json, run record."""
    return write_folds(tmp_path_factory.mktemp("cv"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_checkpoints_segment_as_one_ensemble_and_every_checkpoint_is_hashed(folds, scans, tmp_path, capsys):
    first, second = (folds / f"fold_{fold}" / "models" / "model.pt" for fold in (0, 1))
    output = tmp_path / "out"
    arguments = ["--input", scans["ras_anisotropic"], "--output", output, "--save-probabilities"]
    code, stderr = infer_in_process(capsys, "--ckpt", first, second, *arguments)
    assert code == 0, stderr[-3000:]
    provenance = json.loads((output / "ras_anisotropic_seg.json").read_text())
    assert provenance["checkpoints"] == [
        {"file": "model.pt", "sha256": sha256(first), "training_run_id": "fold-0-run"},
        {"file": "model.pt", "sha256": sha256(second), "training_run_id": "fold-1-run"},
    ]
    assert "checkpoint" not in provenance and provenance["parameters"]["models"] == 2
    probabilities = np.load(output / "ras_anisotropic_probabilities.npz")["probabilities"].astype(np.float32)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-2)  # the blended mean probability
    client = MlflowClient(f"sqlite:///{output / 'mlflow' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("gdlseg").experiment_id])
    assert run.data.params["models"] == "2" and "checkpoint" not in run.data.params
    assert run.data.params["checkpoint_sha256"] == str([sha256(first), sha256(second)])
    assert run.data.tags["gdlseg.training_run_ids"] == "fold-0-run,fold-1-run"
    assert run.data.tags["gdlseg.training_run_id"] == "fold-0-run"
    assert str(tmp_path) not in json.dumps(run.data.params) + json.dumps(run.data.tags)
    assert str(folds) not in json.dumps(run.data.params) + json.dumps(provenance)

    by_folder = tmp_path / "by_folder"  # the folds' output folder: the same models in the same order
    code, stderr = infer_in_process(capsys, "--ckpt", folds, *arguments[:3], by_folder, "--no-tracking")
    assert code == 0, stderr[-3000:]
    same = json.loads((by_folder / "ras_anisotropic_seg.json").read_text())
    assert same["checkpoints"] == provenance["checkpoints"]
    labels = [
        sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "ras_anisotropic_seg.nii.gz")))
        for folder in (output, by_folder)
    ]
    np.testing.assert_array_equal(*labels)


def test_checkpoints_that_disagree_are_refused_before_anything_is_written(folds, scans, tmp_path, capsys):
    other = write_checkpoint(tmp_path / "other", classes=3, seed=2)
    output = tmp_path / "out"
    first = folds / "fold_0" / "models" / "model.pt"
    code, stderr = infer_in_process(capsys, "--ckpt", first, other, "--input", scans["lps"], "--output", output)
    assert code == 1 and f"checkpoint {other} cannot be ensembled with {first}: its class names" in stderr
    assert not output.exists()
    code, stderr = infer_in_process(capsys, "--ckpt", tmp_path, "--input", scans["lps"], "--output", output)
    assert code == 2 and "holds no fold_*/models/model.pt and no *.pt file" in stderr
    assert not output.exists()


def test_the_cross_validation_post_processing_beside_the_folds_is_applied_and_recorded(folds, scans, tmp_path, capsys):
    from gdlseg.inference.postprocessing import ClassRule, apply_postprocessing

    models = tmp_path / "cv"
    shutil.copytree(folds, models)
    rules = {"organ": {"largest_component": True, "min_volume_mm3": None}, "lesion": {"min_volume_mm3": 50.0}}
    (models / "postprocessing.json").write_text(json.dumps({"format": "gdlseg-postprocessing", "rules": rules}))
    plain, processed = tmp_path / "plain", tmp_path / "processed"
    arguments = ["--input", scans["ras_anisotropic"], "--no-tracking"]
    code, stderr = infer_in_process(capsys, "--ckpt", models, *arguments, "--output", plain, "--postprocessing", "none")
    assert code == 0, stderr[-3000:]
    code, stderr = infer_in_process(capsys, "--ckpt", models, *arguments, "--output", processed)  # auto
    assert code == 0, stderr[-3000:]
    record = json.loads((processed / "ras_anisotropic_seg.json").read_text())["parameters"]["postprocessing"]
    assert record == {"rules": rules | {"lesion": {"largest_component": False, "min_volume_mm3": 50.0}},
                      "sha256": sha256(models / "postprocessing.json")}  # fmt: skip
    assert json.loads((plain / "ras_anisotropic_seg.json").read_text())["parameters"]["postprocessing"] == "none"
    image = sitk.ReadImage(str(plain / "ras_anisotropic_seg.nii.gz"))
    expected = apply_postprocessing(
        sitk.GetArrayFromImage(image),
        image.GetSpacing()[::-1],
        {1: ClassRule(largest_component=True), 3: ClassRule(min_volume_mm3=50.0)},
    )
    result = sitk.GetArrayFromImage(sitk.ReadImage(str(processed / "ras_anisotropic_seg.nii.gz")))
    np.testing.assert_array_equal(result, expected)
    assert (result != sitk.GetArrayFromImage(image)).any()  # the random network's scattered labels were pruned
    statistics = json.loads((processed / "ras_anisotropic_stats.json").read_text())["classes"]  # of the pruned map
    assert statistics["organ"]["voxels"] == int((result == 1).sum()) and statistics["organ"]["components"] <= 1
    table = (processed / "statistics.csv").read_text().splitlines()
    assert table[0].startswith("case,class,voxels,volume_ml") and len(table) == 4  # one row per class, 1 channel

    (models / "postprocessing.json").write_text(json.dumps({"format": "gdlseg-postprocessing", "rules": {"liver": {}}}))
    refused = tmp_path / "refused"
    code, stderr = infer_in_process(capsys, "--ckpt", models, *arguments, "--output", refused)
    assert code == 2 and "a rule for class 'liver', which the model does not segment" in stderr
    assert not refused.exists()
