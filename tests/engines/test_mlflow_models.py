"""A training run's best model as MLflow models: the pyfunc segments a scan loaded from ``runs:/``, the
PyTorch flavour carries a signature and an input example, the datalist is a dataset input, and a store
lost during the run receives all of it at replay. Real Ignite engines, real SQLite stores."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from gdlseg.engines.mlflow_handler import MLflowTracker
from gdlseg.tracking.spool import replay_spool

from ..inference.checkpoints import BUNDLE_ROOT, write_checkpoint
from ..tracking.stores import only_run, sqlite


def train_with_tracker(tmp_path: Path, uri: str, **tracker_options) -> Path:
    """A one-epoch Ignite engine with the tracker, whose best weights are a tiny real SegResNet."""
    from ignite.engine import Engine

    weights = write_checkpoint(tmp_path / "models")
    datalist = tmp_path / "data" / "dataset.json"
    datalist.parent.mkdir()
    datalist.write_text(json.dumps({"training": [{"image": "images/case_0.nii.gz", "label": "labels/case_0.nii.gz"}]}))
    engine = Engine(lambda engine, batch: {"loss": float(batch)})
    tracker = MLflowTracker(
        tmp_path / "out", tracking_uri=uri, bundle_root=BUNDLE_ROOT, datalist=datalist, model_weights=weights,
        **tracker_options,
    )  # fmt: skip
    tracker.attach(engine)
    engine.run([1.0], max_epochs=1)
    return weights


def scan(path: Path) -> Path:
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(20, 24, 28)).astype(np.float32))
    image.SetSpacing((1.5, 1.5, 2.5))
    sitk.WriteImage(image, str(path))
    return path


def test_finished_training_logs_a_pyfunc_that_segments_a_scan(tmp_path):
    uri = sqlite(tmp_path)
    train_with_tracker(tmp_path, uri)
    client, run = only_run(uri)
    assert run.info.status == "FINISHED"
    run_id = run.info.run_id
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
        labels = model.predict(str(scan(tmp_path / "scan.nii.gz")))
        assert labels.shape == (20, 24, 28) and labels.dtype == np.uint8 and labels.max() <= 3
        from_array = model.predict({"image": np.zeros((16, 16, 16), np.float32), "spacing": [1.5, 1.5, 2.5]})
        assert from_array.shape == (16, 16, 16)
        with pytest.raises(ValueError, match="expected a scan path"):
            model.predict(3.0)

        network = mlflow.pytorch.load_model(f"runs:/{run_id}/pytorch_model")
        assert network(torch.zeros(1, 1, 32, 32, 16)).shape == (1, 4, 32, 32, 16)
        info = mlflow.models.get_model_info(f"runs:/{run_id}/pytorch_model")
        assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 1, -1, -1, -1)
        assert info.saved_input_example_info["artifact_path"] == "input_example.json"
    finally:
        mlflow.set_tracking_uri(None)

    (dataset,) = client.get_run(run_id).inputs.dataset_inputs
    profile = json.loads(dataset.dataset.profile)
    assert profile["cases"] == {"training": ["case_0"]} and len(dataset.dataset.digest) == 32
    assert profile["datalist_sha256"].startswith(dataset.dataset.digest)
    assert json.loads(dataset.dataset.source) == {"datalist": "dataset.json"}


def test_a_lost_store_receives_the_model_and_its_registration_at_replay(tmp_path):
    """The store is unreachable from the start: the model folders and the registration wait in the spool."""
    lost = "http://127.0.0.1:9"  # the discard port: nothing answers there
    train_with_tracker(tmp_path, lost, registered_model_name="spleen", registered_model_alias="champion")
    uri = sqlite(tmp_path)
    (run_id,) = replay_spool(tmp_path / "out" / "mlflow_spool", uri)
    client = mlflow.tracking.MlflowClient(uri)
    version = client.get_model_version_by_alias("spleen", "champion")
    assert version.run_id == run_id and version.source == f"runs:/{run_id}/model"
    names = {item.path for item in client.list_artifacts(run_id)}
    assert {"model", "pytorch_model"} <= names
    assert client.get_run(run_id).inputs.dataset_inputs


def test_an_alias_without_a_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs a registered_model_name"):
        MLflowTracker(tmp_path, registered_model_alias="champion")


def test_system_metrics_are_sampled_during_the_run_only_when_asked(tmp_path):
    import time

    from ignite.engine import Engine

    def slow_step(engine, batch):
        time.sleep(0.4)
        return {"loss": float(batch)}

    for enabled, folder in ((True, tmp_path / "on"), (False, tmp_path / "off")):
        uri = sqlite(folder)
        engine = Engine(slow_step)
        tracker = MLflowTracker(folder, tracking_uri=uri, system_metrics=enabled, system_metrics_interval=0.2)
        tracker.attach(engine)
        engine.run([1.0, 0.5, 0.2], max_epochs=1)
        client, run = only_run(uri)
        system = {key for key in run.data.metrics if key.startswith("system/")}
        assert run.info.status == "FINISHED"
        if enabled:
            assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system
            history = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
            assert all(point.timestamp <= run.info.end_time for point in history)
        else:
            assert system == set()
