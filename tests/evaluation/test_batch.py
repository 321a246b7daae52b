"""The evaluation batch run called as a notebook would: plain arguments, no command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from mlflow.tracking import MlflowClient

from gdlseg.evaluation.batch import evaluate_cases
from gdlseg.evaluation.cases import pair_cases


def write(array_zyx: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path))


def write_cases(folder, prediction: np.ndarray, reference: np.ndarray, cases=("a", "b")):
    """``ref/<case>.nii.gz`` and ``pred/<case>_seg.nii.gz`` for each case, paired."""
    for case in cases:
        write(reference, folder / "ref" / f"{case}.nii.gz")
        write(prediction, folder / "pred" / f"{case}_seg.nii.gz")
    return pair_cases(folder / "pred", folder / "ref")


def test_evaluate_cases_writes_the_report_and_one_tracked_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    labels = np.zeros((6, 5, 5), dtype=np.uint8)
    labels[2:4, 1:4, 1:4] = 1
    write(labels, tmp_path / "ref" / "lonely.nii.gz")
    pairs = write_cases(tmp_path, labels, labels)
    unmatched = {"references_without_prediction": pairs.references_without_prediction}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    outcome = evaluate_cases(
        pairs.matched,
        tmp_path / "out",
        class_names=["background", "organ"],
        overlays=1,
        unmatched=unmatched,
        tracking_uri=uri,
    )

    assert outcome.summary["mean_dice"] == 1.0 and not outcome.failures
    assert not outcome.ok  # the reference without a prediction counts as a failure
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["unmatched"] == {
        "references_without_prediction": ["lonely"]
    }
    assert sorted(path.name for path in (tmp_path / "out" / "overlays").iterdir()) == ["a.png"]
    run = MlflowClient(uri).get_run(outcome.run_id)
    assert run.data.params["class_names_from"] == "class_names" and run.data.metrics["dice_organ"] == 1.0
    assert run.info.status == "FINISHED"


def test_nsd_and_lesion_detection_land_in_the_report_and_the_run(tmp_path, monkeypatch):
    """The known lesion case of test_lesions twice (the z axis spaced 2 mm, so volumes double): every new
    number in summary.json, lesions.csv, and the MLflow run."""
    from tests.evaluation.test_lesions import known_case

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = {"nsd_tolerance_by_class": {"tumour": 1.0}, "lesion_classes": ["tumour"], "lesion_size_bins_ml": (0.5,)}
    pairs = write_cases(tmp_path, *known_case())
    outcome = evaluate_cases(
        pairs.matched, tmp_path / "out", ["background", "tumour"], overlays=0, tracking_uri=uri, **settings
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    tumour = summary["lesions"]["classes"]["tumour"]
    assert (tumour["tp"], tumour["fn"], tumour["fp"]) == (2, 2, 2) and tumour["f1"]["value"] == 0.5
    # volumes at 2 mm³ per voxel: A 0.054 ml, B 1.024 ml, the spurious blob 0.016 ml
    under, over = tumour["size_bins"]
    assert under["bin"] == "under_0.5ml" and (under["tp"], under["fn"], under["fp"]) == (0, 2, 2)
    assert over["sensitivity"]["value"] == 1.0 and over["precision"]["value"] == 1.0
    assert summary["nsd_tolerance_mm"] == {"tumour": 1.0}
    assert summary["classes"]["tumour"]["nsd"]["ci95"] is not None
    assert (tmp_path / "out" / "lesions.csv").read_text().count("\n") == 1 + 2 * 4

    run = MlflowClient(uri).get_run(outcome.run_id)
    metrics = run.data.metrics
    assert metrics["nsd_tumour"] == summary["classes"]["tumour"]["nsd"]["mean"]
    assert metrics["dice_tumour_ci95_low"] == summary["classes"]["tumour"]["dice"]["ci95"][0]
    assert metrics["lesion_sensitivity_tumour"] == 0.5 and metrics["lesion_f1_per_case_tumour"] == 0.5
    assert (metrics["lesions_tp_tumour"], metrics["lesions_fn_tumour"], metrics["lesions_fp_tumour"]) == (2, 2, 2)
    assert metrics["lesion_fp_per_scan_tumour"] == 1.0 and metrics["lesion_sensitivity_tumour_0.5ml_and_over"] == 1.0
    assert metrics["lesion_fp_per_scan_tumour_under_0.5ml"] == 1.0
    assert "lesion_sensitivity_tumour_ci95_low" in metrics and "mean_dice_ci95_high" in metrics
    assert run.data.params["lesion_classes"] == "['tumour']" and run.data.params["nsd_tolerance_mm"] == "2.0"
    artifacts = {item.path for item in MlflowClient(uri).list_artifacts(outcome.run_id)}
    assert {"metrics.csv", "lesions.csv", "summary.json"} <= artifacts


def test_an_unknown_class_is_refused_before_anything_is_written(tmp_path):
    labels = np.zeros((6, 5, 5), dtype=np.uint8)
    pairs = write_cases(tmp_path, labels, labels, ["a"])
    with pytest.raises(ValueError, match="lesion class 'tumor' is not a foreground class; the classes are tumour"):
        evaluate_cases(pairs.matched, tmp_path / "out", ["background", "tumour"], lesion_classes=["tumor"])
    assert not (tmp_path / "out").exists()


def test_without_class_names_a_named_lesion_class_that_never_occurs_is_still_reported():
    from gdlseg.evaluation.batch import label_names
    from gdlseg.evaluation.metrics import absent_class_metrics
    from gdlseg.evaluation.options import metric_options

    results = {"a": {1: absent_class_metrics()}}
    names = label_names(results, None, metric_options(None, lesion_classes=["class_3"]))
    assert names == {1: "class_1", 2: "class_2", 3: "class_3"}
    assert results["a"][3]["lesions"].tp == 0 and "lesions" not in results["a"][2]
