"""The engine-free run lifecycle (tracked_run / TrackedRun) on real MLflow stores."""

from __future__ import annotations

import json
import os
import signal

import pytest
from mlflow.tracking import MlflowClient

from gdlseg.tracking import RunSettings, TrackedRun, default_tracking_uri, tracked_run

from ..bundles.conftest import free_port
from .stores import only_run, sqlite


def test_tracked_run_logs_a_complete_finished_run(tmp_path):
    training = tmp_path / "mlflow_run.json"
    training.write_text(json.dumps({"run_id": "abc123"}))
    report = tmp_path / "reports"
    report.mkdir()
    (report / "summary.json").write_text("{}")
    uri = sqlite(tmp_path)
    with tracked_run(
        RunSettings(
            tmp_path,
            job="evaluate",
            tracking_uri=uri,
            params={"data": {"roi_size": [32, 32, 16]}, "seed": 0},
            tags={"dataset": {"cases": 3}},
            source_run_record=training,
        )
    ) as run:
        assert run.run_id is not None
        run.log_metrics({"dice_organ": 0.9}, step=0)
        run.log_metrics({"dice_organ": 0.95}, step=1)
        run.log_artifacts([report, tmp_path / "missing.txt"])
    client, found = only_run(uri)
    assert found.info.status == "FINISHED"
    assert found.info.run_name.startswith("evaluate-")
    assert found.data.params == {"data.roi_size": "[32, 32, 16]", "seed": "0"}
    tags = found.data.tags
    assert tags["gdlseg.job"] == "evaluate" and tags["gdlseg.training_run_id"] == "abc123"
    assert tags["dataset.cases"] == "3" and "monai.version" in tags and "torch.version" in tags
    history = client.get_metric_history(found.info.run_id, "dice_organ")
    assert [(point.step, point.value) for point in history] == [(0, 0.9), (1, 0.95)]
    assert [item.path for item in client.list_artifacts(found.info.run_id, "reports")] == ["reports/summary.json"]
    assert not (tmp_path / "mlflow_spool").exists()


def test_mlflow_tracking_uri_from_the_environment_is_the_store_when_none_is_given(tmp_path, monkeypatch):
    team_store = sqlite(tmp_path / "team")
    (tmp_path / "team").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_store)
    assert default_tracking_uri(tmp_path / "out") == team_store  # what the bundles' tracking_uri defaults to
    with tracked_run(RunSettings(tmp_path / "out", job="train")) as run:
        run.log_metrics({"train_loss": 0.5})
    _, found = only_run(team_store)
    assert found.info.status == "FINISHED" and found.data.metrics["train_loss"] == 0.5
    assert not (tmp_path / "out" / "mlflow").exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert (
        default_tracking_uri(tmp_path / "out") == f"sqlite:///{(tmp_path / 'out').resolve() / 'mlflow' / 'mlflow.db'}"
    )


def test_each_run_gets_a_new_unique_name(tmp_path):
    uri = sqlite(tmp_path)
    for _ in range(2):
        with tracked_run(RunSettings(tmp_path, job="infer", tracking_uri=uri)):
            pass
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("gdlseg").experiment_id])
    assert len(runs) == 2 and len({run.info.run_name for run in runs}) == 2


@pytest.mark.parametrize(
    ("error", "status"),
    [(ValueError("case phantom_003: bad spacing"), "FAILED"), (KeyboardInterrupt(), "KILLED")],
)
def test_an_exception_ends_the_run_with_its_status_and_propagates(tmp_path, error, status):
    uri = sqlite(tmp_path)
    with pytest.raises(type(error)), tracked_run(RunSettings(tmp_path, tracking_uri=uri)):
        raise error
    _, found = only_run(uri)
    assert found.info.status == status
    assert found.data.tags["gdlseg.error"].startswith(type(error).__name__)


def test_sigterm_inside_a_tracked_run_ends_it_killed(tmp_path):
    uri = sqlite(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), tracked_run(RunSettings(tmp_path, tracking_uri=uri)):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 5)  # give the handler its chance to run
    _, found = only_run(uri)
    assert found.info.status == "KILLED" and "SIGTERM" in found.data.tags["gdlseg.error"]
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_tracking_none_disables_everything(tmp_path):
    with tracked_run(RunSettings(tmp_path, tracking_uri="none", params={"a": 1})) as run:
        run.log_metrics({"x": 1.0})
        assert run.run_id is None
    assert list(tmp_path.iterdir()) == []


def test_run_record_names_the_run_and_the_spool(tmp_path):
    record = tmp_path / "models" / "mlflow_run.json"
    run = TrackedRun(RunSettings(tmp_path, tracking_uri=sqlite(tmp_path), run_record=record)).start()
    written = json.loads(record.read_text())
    assert written["run_id"] == run.run_id and written["pid"] == os.getpid() and "spool" not in written
    run.end()
    offline = TrackedRun(
        RunSettings(tmp_path, tracking_uri=f"http://127.0.0.1:{free_port()}", run_record=record)
    ).start()
    written = json.loads(record.read_text())
    assert written["run_id"] is None and written["spool"] == str(offline.spool.path)
