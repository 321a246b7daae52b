"""The evaluation batch run called as a notebook would: plain arguments, no command line."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
from mlflow.tracking import MlflowClient

from gdlseg.evaluation.batch import evaluate_cases
from gdlseg.evaluation.cases import pair_cases


def write(array_zyx: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path))


def test_evaluate_cases_writes_the_report_and_one_tracked_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    labels = np.zeros((6, 5, 5), dtype=np.uint8)
    labels[2:4, 1:4, 1:4] = 1
    for case in ("a", "b"):
        write(labels, tmp_path / "ref" / f"{case}.nii.gz")
        write(labels, tmp_path / "pred" / f"{case}_seg.nii.gz")
    write(labels, tmp_path / "ref" / "lonely.nii.gz")
    pairs = pair_cases(tmp_path / "pred", tmp_path / "ref")
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
