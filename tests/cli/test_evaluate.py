"""``gdlseg evaluate`` end to end on tiny NIfTI files, with a real SQLite MLflow store."""

import csv
import json
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk
from mlflow.tracking import MlflowClient

from gdlseg.cli.main import main
from gdlseg.tracking import default_tracking_uri
from tests.cli.test_main import gdlseg_command
from tests.cli.training_records import record_a_finished_training

SPACING_XYZ = (0.7, 1.5, 2.0)
CLASSES = ["background", "organ", "lesion"]


def write(array_zyx: np.ndarray, path, spacing=SPACING_XYZ) -> None:
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 5.0, 30.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def reference_map() -> np.ndarray:
    """(z, y, x) = (8, 6, 6): organ plate at z = 3, lesion a 2×2×2 block."""
    labels = np.zeros((8, 6, 6), dtype=np.uint8)
    labels[3, 1:5, 1:5] = 1
    labels[5:7, 2:4, 2:4] = 2
    return labels


@pytest.fixture
def data(tmp_path, monkeypatch):
    """Three cases: "exact" (prediction = reference), "shifted" (half the organ plate 2 voxels up in z,
    lesion missed), "wrong_grid" (prediction on another spacing); scans for the overlays."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    reference = reference_map()
    shifted = reference.copy()
    shifted[3, 3:5, 1:5] = 0
    shifted[5, 3:5, 1:5] = 1
    shifted[shifted == 2] = 0
    for case, prediction in (("exact", reference), ("shifted", shifted), ("wrong_grid", reference)):
        write(reference, tmp_path / "ref" / f"{case}.nii.gz")
        spacing = (0.7, 1.5, 2.5) if case == "wrong_grid" else SPACING_XYZ
        write(prediction, tmp_path / "pred" / f"{case}_seg.nii.gz", spacing)
        scan = np.random.default_rng(0).normal(size=reference.shape).astype(np.float32)
        write(scan, tmp_path / "images" / f"{case}.nii.gz")
    return tmp_path


def evaluate(data, *extra: str) -> int:
    return main(
        ["evaluate", "--pred", str(data / "pred"), "--ref", str(data / "ref"), "--output", str(data / "out"), *extra]
    )


def rows_of(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def runs_in(uri: str):
    client = MlflowClient(tracking_uri=uri)
    experiments = client.search_experiments()
    return client, [run for e in experiments for run in client.search_runs([e.experiment_id])]


def test_console_script_end_to_end(data):
    (data / "pred" / "wrong_grid_seg.nii.gz").unlink()
    (data / "ref" / "wrong_grid.nii.gz").unlink()
    command = [gdlseg_command(), "evaluate", "--pred", str(data / "pred"), "--ref", str(data / "ref")]
    command += ["--output", str(data / "out"), "--images", str(data / "images"), "--classes", *CLASSES]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "2 case(s) evaluated, 0 failed" in result.stdout
    assert "evaluate: 100%" in result.stderr  # the progress bar

    rows = {(row["case"], row["class"]): row for row in rows_of(data / "out" / "metrics.csv")}
    assert len(rows) == 4
    exact = rows["exact", "organ"]
    assert (float(exact["dice"]), float(exact["hd95_mm"]), float(exact["msd_mm"])) == (1.0, 0.0, 0.0)
    organ = rows["shifted", "organ"]
    # Half of a 4×4 plate moved 2 voxels along z (2.0 mm): Dice 2·8/32, HD95 4 mm,
    # MSD (8·4 + 4·1.5 + 4·3)/32 mm (the vacated rows are 1.5 and 3.0 mm from the kept ones along y).
    assert float(organ["dice"]) == pytest.approx(0.5)
    assert float(organ["hd95_mm"]) == pytest.approx(4.0)
    assert float(organ["msd_mm"]) == pytest.approx(1.5625)
    assert float(organ["volume_reference_ml"]) == pytest.approx(16 * 0.7 * 1.5 * 2.0 / 1000)
    lesion = rows["shifted", "lesion"]
    assert (float(lesion["dice"]), lesion["hd95_mm"], float(lesion["volume_prediction_ml"])) == (0.0, "inf", 0.0)

    summary = json.loads((data / "out" / "summary.json").read_text())
    assert summary["classes"]["organ"]["dice"]["mean"] == pytest.approx(0.75)
    assert summary["classes"]["lesion"]["hd95_mm"]["cases"] == 1 and summary["classes"]["lesion"]["empty_in_one"] == 1
    pictures = sorted(p.relative_to(data / "out").as_posix() for p in (data / "out").rglob("*.png"))
    assert "overlays/shifted.png" in pictures and "plots/box_dice.png" in pictures

    # Tracking is on by default, into SQLite under --output.
    assert (data / "out" / "mlflow" / "mlflow.db").is_file()
    client, runs = runs_in(default_tracking_uri(data / "out"))
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.tags["gdlseg.job"] == "evaluate"
    assert run.data.metrics["dice_organ"] == pytest.approx(0.75)
    assert run.data.metrics["hd95_mm_organ"] == pytest.approx(2.0)
    assert run.data.metrics["hd95_mm_lesion"] == 0.0  # the missed lesion (inf) is left out, counted in the summary
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"metrics.csv", "summary.json", "plots", "overlays"} <= artifacts
    logged = json.dumps([run.data.params, run.data.tags])
    assert str(data) not in logged  # no folder (which may name a patient) reaches MLflow


def test_a_bad_case_is_reported_and_the_others_finish(data, capsys):
    (data / "pred" / "shifted_seg.nii.gz").write_bytes(b"not an image")
    assert evaluate(data, "--classes", *CLASSES, "--no-tracking") == 1
    err = capsys.readouterr().err
    assert "case shifted: cannot read the prediction shifted_seg.nii.gz" in err
    assert "case wrong_grid: prediction and reference lie on different voxel grids: spacing" in err
    assert str(data) not in err
    assert [row["case"] for row in rows_of(data / "out" / "metrics.csv")] == ["exact", "exact"]
    summary = json.loads((data / "out" / "summary.json").read_text())
    assert summary["cases"] == {"evaluated": 1, "failed": 2}
    assert [failure["case"] for failure in summary["failed_cases"]] == ["shifted", "wrong_grid"]
    assert str(data) not in json.dumps(summary)
    assert not (data / "out" / "mlflow").exists()  # --no-tracking


def test_unmatched_cases_are_named(data, capsys):
    (data / "pred" / "wrong_grid_seg.nii.gz").rename(data / "pred" / "extra_seg.nii.gz")
    assert evaluate(data, "--no-tracking") == 1  # a reference without its prediction counts as failed
    err = capsys.readouterr().err
    assert "1 reference(s) without a prediction (counted as failed): wrong_grid" in err
    assert "1 prediction(s) without a reference (not evaluated): extra" in err
    summary = json.loads((data / "out" / "summary.json").read_text())
    assert summary["unmatched"] == {
        "references_without_prediction": ["wrong_grid"],
        "predictions_without_reference": ["extra"],
    }
    # Without names, the classes are the labels found.
    assert list(summary["classes"]) == ["class_1", "class_2"]
    (data / "ref" / "wrong_grid.nii.gz").unlink()
    assert evaluate(data, "--no-tracking") == 0  # a prediction without a reference is not a failure


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--pred", "missing"], "--pred missing: not a folder"),
        (["--classes", "background"], "--classes needs background and at least one class"),
        (["--overlays", "-1"], "--overlays must be 0 or more"),
        (["--training-record", "nothing.json"], "--training-record nothing.json: cannot be read as JSON"),
        (["--nsd-tolerance", "abc"], "--nsd-tolerance abc: expected a number of mm or NAME=MM"),
        (["--nsd-tolerance", "1", "2"], "--nsd-tolerance: two values for every class (1 and 2); give one"),
        (["--nsd-tolerance", "=1"], "--nsd-tolerance =1: a class name must come before ="),
        (["--nsd-tolerance", "class_1=1", "class_1=2"], "--nsd-tolerance: class_1 is given twice"),
        (["--nsd-tolerance", "class_1=-1"], "--nsd-tolerance class_1=-1: an NSD tolerance must be a finite number"),
        (["--nsd-tolerance", "organ=1"], "--nsd-tolerance: NSD tolerance of organ: 'organ' is not a class: without"),
        (["--lesion-classes", "lesion"], "--lesion-classes: lesion class 'lesion' is not a class: without class names"),
        (
            ["--classes", *CLASSES, "--lesion-classes", "tumour"],
            "--lesion-classes: lesion class 'tumour' is not a foreground class; the classes are organ, lesion",
        ),
        (["--lesion-size-bins", "1"], "--lesion-size-bins needs --lesion-classes"),
        (
            ["--lesion-classes", "class_2", "--lesion-size-bins", "1", "0.5"],
            "--lesion-size-bins: lesion size bin edges must be strictly increasing, got [1.0, 0.5]",
        ),
    ],
)
def test_usage_errors_exit_2(data, capsys, arguments, message):
    assert evaluate(data, *arguments) == 2  # argparse keeps the last of a repeated option
    assert message in capsys.readouterr().err


def test_nsd_tolerances_and_lesion_detection(data, capsys):
    """Per-class NSD tolerance and the lesion class: "exact" finds its lesion, "shifted" misses it, no
    false positive anywhere. In MLflow (the default SQLite store) with the other per-class means."""
    (data / "pred" / "wrong_grid_seg.nii.gz").unlink()
    (data / "ref" / "wrong_grid.nii.gz").unlink()
    arguments = ["--classes", *CLASSES, "--nsd-tolerance", "2.5", "organ=3", "--lesion-classes", "lesion"]
    assert evaluate(data, *arguments, "--overlays", "0") == 0
    out = capsys.readouterr().out
    assert "NSD" in out
    assert (
        "lesion lesions: 2 in the references, 1 detected (sensitivity 0.500), 0 false positive (0.000 per scan)" in out
    )

    rows = {(row["case"], row["class"]): row for row in rows_of(data / "out" / "metrics.csv")}
    # organ of "shifted": distances 16 × 0, 4 × 1.5, 4 × 3.0, 8 × 4.0 mm (test_surface's half plate): τ = 3 mm
    assert float(rows["shifted", "organ"]["nsd"]) == 24 / 32
    assert float(rows["shifted", "lesion"]["nsd"]) == 0.0 and float(rows["exact", "lesion"]["nsd"]) == 1.0
    assert (rows["shifted", "lesion"]["lesions_fn"], rows["exact", "lesion"]["lesions_tp"]) == ("1", "1")
    assert rows["shifted", "organ"]["lesions_tp"] == ""  # not a lesion class
    summary = json.loads((data / "out" / "summary.json").read_text())
    assert summary["nsd_tolerance_mm"] == {"organ": 3.0, "lesion": 2.5}
    lesion = summary["lesions"]["classes"]["lesion"]
    assert lesion["sensitivity"]["value"] == 0.5 and lesion["precision"]["value"] == 1.0
    assert lesion["f1"]["value"] == pytest.approx(2 / 3)
    # the 2×2×2 block is 8 × 2.1 mm³ = 0.0168 ml: in the first of the default bins
    assert [entry["reference_lesions"] for entry in lesion["size_bins"]] == [2, 0, 0, 0]

    _, [run] = runs_in(default_tracking_uri(data / "out"))
    assert run.data.metrics["nsd_organ"] == pytest.approx((1.0 + 0.75) / 2)
    assert run.data.metrics["lesion_sensitivity_lesion"] == 0.5
    assert run.data.metrics["lesion_sensitivity_lesion_under_0.1ml"] == 0.5
    assert run.data.params["nsd_tolerance_mm"] == "2.5"


def test_no_pair_at_all_is_a_usage_error(data, capsys):
    empty = data / "empty"
    empty.mkdir()
    assert main(["evaluate", "--pred", str(empty), "--ref", str(data / "ref"), "--output", str(data / "o")]) == 2
    expected = "no prediction in --pred pairs with a reference in --ref (0 predictions, 3 references"
    assert expected in capsys.readouterr().err
    assert not (data / "o").exists()


def test_help():
    result = subprocess.run([gdlseg_command(), "evaluate", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "--training-run-record" in result.stdout and "Exit codes" in result.stdout
    assert "--nsd-tolerance MM|NAME=MM" in result.stdout and "--lesion-classes NAME" in result.stdout


def test_tagged_with_the_training_run_in_its_store_with_its_class_names(data):
    """A training's models/ folder holds mlflow_run.json and training.json: the evaluation run goes to
    the training's store, carries its run id, and takes the class names from training.json."""
    training = record_a_finished_training(data / "training")
    models, uri, experiment = training.models, training.tracking_uri, training.experiment_id
    (models / "training.json").write_text(json.dumps({"class_names": ["background", "liver", "tumour"]}))

    assert evaluate(data, "--training-run-record", str(models / "mlflow_run.json"), "--overlays", "0") == 1
    _, runs = runs_in(uri)
    evaluation = next(run for run in runs if run.data.tags.get("gdlseg.job") == "evaluate")
    assert evaluation.info.status == "FINISHED"
    assert evaluation.info.experiment_id == experiment
    assert evaluation.data.tags["gdlseg.training_run_id"] == training.run_id
    assert evaluation.data.params["class_names_from"] == "training.json"
    assert evaluation.data.metrics["cases_failed"] == 1.0  # wrong_grid
    assert "dice_liver" in evaluation.data.metrics and "dice_tumour" in evaluation.data.metrics
    assert not (data / "out" / "mlflow").exists()
    assert not (data / "out" / "overlays").exists()
