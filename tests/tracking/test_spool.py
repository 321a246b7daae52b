"""What an unreachable store did not receive: spooled during the run, replayed later (live and
replayed records go through one send)."""

from __future__ import annotations

import logging

from mlflow.tracking import MlflowClient

from gdlseg.cli.main import main as gdlseg_main
from gdlseg.tracking import RunSettings, TrackedRun, read_spool, replay_spool, tracked_run

from ..bundles.conftest import free_port, start_mlflow_server, stop_mlflow_server
from .stores import only_run, sqlite


def test_unreachable_at_start_spools_the_whole_run_and_replay_completes_it(tmp_path, caplog):
    output = tmp_path / "out"
    (output / "reports").mkdir(parents=True)
    (output / "reports" / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    dead = f"http://127.0.0.1:{free_port()}"
    with (
        caplog.at_level(logging.WARNING, "gdlseg.tracking"),
        tracked_run(RunSettings(output, job="evaluate", tracking_uri=dead, params={"seed": 3})) as run,
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
        run = TrackedRun(RunSettings(tmp_path / "out", job="train", tracking_uri=uri, params={"lr": 0.1})).start()
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
    run = TrackedRun(RunSettings(tmp_path, tracking_uri=f"http://127.0.0.1:{free_port()}")).start()
    run.log_metrics({"loss": 1.0}, step=1)
    with run.spool.path.open("a") as stream:
        stream.write('{"op": "metrics", "metr')  # the process died while writing this line
    target = sqlite(tmp_path / "store")
    [run_id] = replay_spool(run.spool.path, target)
    found = MlflowClient(target).get_run(run_id)
    assert found.info.status == "KILLED" and "killed" in found.data.tags["gdlseg.error"]
    assert found.data.metrics == {"loss": 1.0}
