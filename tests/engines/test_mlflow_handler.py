"""The Ignite handler MLflowTracker drives a gdlseg.tracking run from a MONAI/Ignite engine."""

from __future__ import annotations

from gdlseg.engines.mlflow_handler import MLflowTracker

from ..tracking.stores import only_run, sqlite


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
