"""The engine-free run lifecycle (tracked_run / TrackedRun) on real MLflow stores, and the spool."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gdlseg.cli.main import main as gdlseg_main
from gdlseg.engines.tracking import (
    MLflowTracker,
    TrackedRun,
    default_tracking_uri,
    experiment_id,
    software_tags,
    tracked_run,
)
from gdlseg.engines.tracking_spool import read_spool, replay_spool

from ..bundles.conftest import free_port, start_mlflow_server, stop_mlflow_server


def sqlite(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def only_run(uri: str, experiment: str = "gdlseg"):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_tracked_run_logs_a_complete_finished_run(tmp_path):
    training = tmp_path / "mlflow_run.json"
    training.write_text(json.dumps({"run_id": "abc123"}))
    report = tmp_path / "reports"
    report.mkdir()
    (report / "summary.json").write_text("{}")
    uri = sqlite(tmp_path)
    with tracked_run(
        tmp_path,
        job="evaluate",
        tracking_uri=uri,
        params={"data": {"roi_size": [32, 32, 16]}, "seed": 0},
        tags={"dataset": {"cases": 3}},
        source_run_record=training,
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
    with tracked_run(tmp_path / "out", job="train") as run:
        run.log_metrics({"train_loss": 0.5})
    _, found = only_run(team_store)
    assert found.info.status == "FINISHED" and found.data.metrics["train_loss"] == 0.5
    assert not (tmp_path / "out" / "mlflow").exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert (
        default_tracking_uri(tmp_path / "out") == f"sqlite:///{(tmp_path / 'out').resolve() / 'mlflow' / 'mlflow.db'}"
    )


def test_the_git_commit_tag_names_the_bundles_checkout_and_is_absent_outside_one(tmp_path):
    bundle = tmp_path / "checkout" / "bundles" / "demo"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "1.2.3"}))
    git = ["git", "-C", str(tmp_path / "checkout"), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bundle"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    tags = software_tags(bundle)
    assert tags["git.commit"] == head and tags["bundle.version"] == "1.2.3"
    outside = tmp_path / "copy"
    outside.mkdir()
    assert "git.commit" not in software_tags(outside)


def test_each_run_gets_a_new_unique_name(tmp_path):
    uri = sqlite(tmp_path)
    for _ in range(2):
        with tracked_run(tmp_path, job="infer", tracking_uri=uri):
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
    with pytest.raises(type(error)), tracked_run(tmp_path, tracking_uri=uri):
        raise error
    _, found = only_run(uri)
    assert found.info.status == status
    assert found.data.tags["gdlseg.error"].startswith(type(error).__name__)


def test_sigterm_inside_a_tracked_run_ends_it_killed(tmp_path):
    uri = sqlite(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), tracked_run(tmp_path, tracking_uri=uri):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 5)  # give the handler its chance to run
    _, found = only_run(uri)
    assert found.info.status == "KILLED" and "SIGTERM" in found.data.tags["gdlseg.error"]
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_tracking_none_disables_everything(tmp_path):
    with tracked_run(tmp_path, tracking_uri="none", params={"a": 1}) as run:
        run.log_metrics({"x": 1.0})
        assert run.run_id is None
    assert list(tmp_path.iterdir()) == []


def test_unreachable_at_start_spools_the_whole_run_and_replay_completes_it(tmp_path, caplog):
    output = tmp_path / "out"
    (output / "reports").mkdir(parents=True)
    (output / "reports" / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    dead = f"http://127.0.0.1:{free_port()}"
    with (
        caplog.at_level(logging.WARNING, "gdlseg.tracking"),
        tracked_run(output, job="evaluate", tracking_uri=dead, params={"seed": 3}) as run,
    ):
        assert run.run_id is None
        run.log_metrics({"dice": 0.8}, step=2)
        run.log_artifacts([output / "reports"])
    spool = output / "mlflow_spool" / f"{run.run_name}.jsonl"
    assert "cannot be reached" in caplog.text and str(spool) in caplog.text
    assert [record["op"] for record in read_spool(spool)] == ["start", "params", "metrics", "artifacts", "end"]
    assert not any(record["sent"] for record in read_spool(spool))

    target = sqlite(tmp_path / "later")
    assert gdlseg_main(["replay-tracking", str(spool.parent), "--tracking-uri", target]) == 0
    client, found = only_run(target)
    assert found.info.status == "FINISHED" and found.info.run_name == run.run_name
    assert found.data.params == {"seed": "3"} and found.data.tags["gdlseg.job"] == "evaluate"
    assert [(p.step, p.value) for p in client.get_metric_history(found.info.run_id, "dice")] == [(2, 0.8)]
    assert [a.path for a in client.list_artifacts(found.info.run_id, "reports")] == ["reports/metrics.csv"]
    assert not spool.exists() and spool.with_name(f"{run.run_name}.replayed.jsonl").exists()
    assert replay_spool(spool.parent, target) == []  # nothing is sent twice


def test_a_store_lost_mid_run_is_spooled_and_replayed_into_the_same_or_a_new_store(tmp_path, caplog):
    server_folder = tmp_path / "server"
    server, uri = start_mlflow_server(server_folder)
    try:
        run = TrackedRun(tmp_path / "out", job="train", tracking_uri=uri, params={"lr": 0.1}).start()
        run.log_metrics({"loss": 1.0}, step=1)
        first_id = run.run_id
    finally:
        stop_mlflow_server(server)
    with caplog.at_level(logging.WARNING, "gdlseg.tracking"):
        run.log_metrics({"loss": 0.5}, step=2)
        run.set_tags({"note": "after the server went away"})
        run.end("FINISHED")
    assert "cannot be reached" in caplog.text and str(run.spool.path) in caplog.text
    records = read_spool(run.spool.path)
    assert [(r["op"], r["sent"]) for r in records] == [
        ("start", True),
        ("params", True),
        ("metrics", True),
        ("metrics", False),
        ("tags", False),
        ("end", False),
    ]

    # A new store: the complete run is created again from the spool.
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(run.spool.path.read_bytes())
    target = sqlite(tmp_path / "new")
    [new_id] = replay_spool(copy, target)
    client = MlflowClient(target)
    replayed = client.get_run(new_id)
    assert replayed.info.status == "FINISHED" and replayed.data.params == {"lr": "0.1"}
    assert replayed.data.tags["gdlseg.replayed_from_run_id"] == first_id
    assert [p.value for p in client.get_metric_history(new_id, "loss")] == [1.0, 0.5]

    # The same store again (its SQLite file, read directly): the run receives only what it missed.
    same = f"sqlite:///{server_folder / 'db.sqlite'}"
    assert replay_spool(run.spool.path, same) == [first_id]
    client = MlflowClient(same)
    back = client.get_run(first_id)
    assert back.info.status == "FINISHED" and back.data.tags["note"] == "after the server went away"
    assert [p.value for p in client.get_metric_history(first_id, "loss")] == [1.0, 0.5]


def test_a_killed_process_spool_replays_as_a_killed_run(tmp_path):
    run = TrackedRun(tmp_path, tracking_uri=f"http://127.0.0.1:{free_port()}").start()
    run.log_metrics({"loss": 1.0}, step=1)
    with run.spool.path.open("a") as stream:
        stream.write('{"op": "metrics", "metr')  # the process died while writing this line
    target = sqlite(tmp_path / "store")
    [run_id] = replay_spool(run.spool.path, target)
    found = MlflowClient(target).get_run(run_id)
    assert found.info.status == "KILLED" and "killed" in found.data.tags["gdlseg.error"]
    assert found.data.metrics == {"loss": 1.0}


def test_run_record_names_the_run_and_the_spool(tmp_path):
    record = tmp_path / "models" / "mlflow_run.json"
    run = TrackedRun(tmp_path, tracking_uri=sqlite(tmp_path), run_record=record).start()
    written = json.loads(record.read_text())
    assert written["run_id"] == run.run_id and written["pid"] == os.getpid() and "spool" not in written
    run.end()
    offline = TrackedRun(tmp_path, tracking_uri=f"http://127.0.0.1:{free_port()}", run_record=record).start()
    written = json.loads(record.read_text())
    assert written["run_id"] is None and written["spool"] == str(offline.spool.path)


def test_mlflow_tracker_uses_a_tracked_run(tmp_path):
    """The Ignite handler and tracked_run share one lifecycle: a tiny engine run ends FINISHED."""
    from ignite.engine import Engine

    uri = sqlite(tmp_path)
    engine = Engine(lambda engine, batch: {"loss": float(batch)})
    engine.state.metrics = {}
    tracker = MLflowTracker(tmp_path, job="train", tracking_uri=uri, params={"max_epochs": 2})
    tracker.attach(engine)
    engine.run([1.0, 0.5], max_epochs=2)
    client, found = only_run(uri)
    assert found.info.status == "FINISHED" and found.data.params == {"max_epochs": "2"}
    assert [p.step for p in client.get_metric_history(found.info.run_id, "train_loss")] == [1, 2, 3, 4]


def test_trackers_starting_together_share_one_experiment(tmp_path):
    """Two trainings that start at once both create the experiment: neither may fail for it."""
    uri = sqlite(tmp_path)
    MlflowClient(uri).search_experiments()  # create the schema once, as a first run would
    found, errors = [], []

    def start() -> None:
        try:
            found.append(experiment_id(MlflowClient(uri), "together", uri))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(found)) == 1
