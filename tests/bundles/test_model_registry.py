"""The MLflow Model Registry on a real ``mlflow server`` on 127.0.0.1: ``gdlseg train --register-model``
registers the run's model and sets the alias; ``gdlseg infer --model models:/NAME@ALIAS`` segments with it."""

from __future__ import annotations

import subprocess

import mlflow
import SimpleITK as sitk
from mlflow.tracking import MlflowClient

from tests.cli.test_main import gdlseg_command
from tests.cli.test_train import TINY, TINY_SETS


def gdlseg(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([gdlseg_command(), *map(str, arguments)], capture_output=True, text=True, timeout=900)


def test_a_registered_model_is_found_by_its_alias_and_segments(mlflow_server, dataset, tmp_path):
    trained = gdlseg(
        "train", "--dataset", dataset, "--output", tmp_path / "train", "--epochs", "1", "--tracking-uri", mlflow_server,
        "--register-model", "spleen-seg", "--model-alias", "champion", *TINY, *TINY_SETS,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-4000:]
    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)
    version = client.get_model_version_by_alias("spleen-seg", "champion")
    assert version.version == "1" and version.source == f"runs:/{version.run_id}/model"
    assert client.get_run(version.run_id).info.status == "FINISHED"

    scan = dataset / "imagesTs" / sorted(p.name for p in (dataset / "imagesTs").iterdir())[0]
    other = next((dataset / "imagesTr").iterdir())
    result = gdlseg(  # in two worker processes, which load the model the command downloaded
        "infer", "--model", "models:/spleen-seg@champion", "--tracking-uri", mlflow_server,
        "--input", scan, other, "--output", tmp_path / "infer", "--workers", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(list((tmp_path / "infer").glob("*_seg.nii.gz"))) == 2
    labels = tmp_path / "infer" / scan.name.replace(".nii.gz", "_seg.nii.gz")
    assert sitk.ReadImage(str(labels)).GetSize() == sitk.ReadImage(str(scan)).GetSize()
    infer_runs = client.search_runs(
        [client.get_experiment_by_name("gdlseg").experiment_id], "tags.`gdlseg.job` = 'infer'"
    )
    assert [run.data.tags["gdlseg.training_run_id"] for run in infer_runs] == [version.run_id]
    assert infer_runs[0].data.params["checkpoint"] == "models:/spleen-seg@champion"
    assert infer_runs[0].data.params["workers"] == "2" and infer_runs[0].data.metrics["cases_segmented"] == 2

    mlflow.set_tracking_uri(mlflow_server)
    try:
        model = mlflow.pyfunc.load_model("models:/spleen-seg@champion")
    finally:
        mlflow.set_tracking_uri(None)
    assert model.predict(str(scan)).shape == sitk.GetArrayFromImage(sitk.ReadImage(str(scan))).shape

    unknown = gdlseg(
        "infer", "--model", "models:/spleen-seg@retired", "--tracking-uri", mlflow_server,
        "--input", scan, "--output", tmp_path / "none",
    )  # fmt: skip
    assert unknown.returncode == 2 and "--model models:/spleen-seg@retired" in unknown.stderr
    assert "retired" in unknown.stderr.splitlines()[-1]
