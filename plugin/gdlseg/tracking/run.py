"""One MLflow run from creation to its final status: :class:`TrackedRun` and :func:`tracked_run`.

Used by the evaluate and infer commands (``with tracked_run(RunSettings(...)) as run:``) and by the
Ignite handler :class:`gdlseg.engines.mlflow_handler.MLflowTracker` of the bundle configs. Each run

- is always a new, uniquely named run (an unfinished one is never resumed, so two trainings at once
  never merge), made through an explicit ``MlflowClient`` (no global active run);
- logs the hyperparameters it is given, flattened (``optimizer.lr``), version tags, the git commit
  when there is one, the training run it derives from (``gdlseg.training_run_id``), no patient paths;
- ends FINISHED, FAILED on an exception (tag ``gdlseg.error``), KILLED on Ctrl-C or SIGTERM;
- keeps going when the tracking store cannot be reached, at the start or in the middle of the run:
  a warning names the spool file ``<output_dir>/mlflow_spool/<run name>.jsonl`` that receives what
  could not be sent, for :func:`gdlseg.tracking.spool.replay_spool` to send later.

The store is chosen as :mod:`gdlseg.tracking.store` describes; the URI ``none`` disables tracking
(no run, nothing spooled).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gdlseg.data.atomic import write_json_atomically
from gdlseg.tracking.params import flatten
from gdlseg.tracking.spool import SPOOL_FOLDER, Spool
from gdlseg.tracking.store import (
    MAX_TAG_LENGTH,
    default_tracking_uri,
    experiment_id,
    now_ms,
    read_run_record,
    send,
    server_reachable,
    software_tags,
    unique_run_name,
)

logger = logging.getLogger("gdlseg.tracking")
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


@dataclass(frozen=True)
class RunSettings:
    """What a run is: where it is kept, what it is called, what it records at its start.

    Attributes:
        output_dir: where the default SQLite store (``<output_dir>/mlflow``) and the spool
            (``<output_dir>/mlflow_spool``) live.
        job: "train", "evaluate" or "infer"; prefixes the generated run name and is the tag ``gdlseg.job``.
        tracking_uri: MLflow tracking URI; None → ``$MLFLOW_TRACKING_URI`` or the SQLite default;
            ``"none"`` → tracking disabled (every call is a no-op).
        experiment_name: created if missing.
        run_name: None → a unique generated name.
        params: hyperparameters, nested mappings allowed (flattened with dots, values as strings).
        tags: extra tags (flattened); the software versions and git commit are added.
        bundle_root: for the bundle version and git commit tags.
        source_run_record: a training's ``mlflow_run.json``; its run id becomes ``gdlseg.training_run_id``.
        run_record: a JSON file that receives this run's id, name, tracking URI (and the spool file
            when it is used), for later evaluation and inference runs to point back at it.
        resumed_from: the checkpoint a training resumes from; the run then gets the tag
            ``gdlseg.resumed_run_id`` (the run in ``run_record`` before this one), and that run, if
            still RUNNING although its process on this machine is gone (``kill -9``), is ended KILLED.
    """

    output_dir: os.PathLike | str
    job: str = "train"
    tracking_uri: str | None = None
    experiment_name: str = "gdlseg"
    run_name: str | None = None
    params: Mapping[str, Any] | None = None
    tags: Mapping[str, Any] | None = None
    bundle_root: os.PathLike | str | None = None
    source_run_record: os.PathLike | str | None = None
    run_record: os.PathLike | str | None = None
    resumed_from: os.PathLike | str | None = None


class TrackedRun:
    """One MLflow run, from creation to its final status (see :class:`RunSettings` for what it is);
    survives an unreachable store by spooling.

    ``run_id`` is None before ``start()``, after the end, and when the store was unreachable at the start.
    """

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.output_dir = Path(settings.output_dir)
        self.job = settings.job
        self.tracking_uri = settings.tracking_uri or default_tracking_uri(settings.output_dir)
        self.enabled = self.tracking_uri.strip().lower() != "none"
        self.experiment_name = settings.experiment_name
        self.run_name = settings.run_name or unique_run_name(settings.job)
        self.params = flatten(settings.params or {})
        self.extra_tags = flatten(settings.tags or {})
        self.bundle_root = settings.bundle_root
        self.source_run_record = Path(settings.source_run_record) if settings.source_run_record else None
        self.run_record = Path(settings.run_record) if settings.run_record else None
        self.resumed_from = settings.resumed_from
        self.run_id: str | None = None
        self.status: str | None = None
        self.spool: Spool | None = None
        self._client: Any = None
        self._started = False
        self._sent: list[dict[str, Any]] = []  # every record sent, for a complete spool if the store goes away
        self._monitor: Any = None

    @property
    def spool_path(self) -> Path:
        return self.output_dir / SPOOL_FOLDER / f"{self.run_name}.jsonl"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> TrackedRun:
        """Create the run (experiment if needed) and log its tags and params. Idempotent."""
        if self._started or not self.enabled:
            self._started = True
            return self
        self._started = True
        tags = {"gdlseg.job": self.job, **software_tags(self.bundle_root), **self.extra_tags}
        training_run = read_run_record(self.source_run_record).get("run_id")
        if training_run:
            tags["gdlseg.training_run_id"] = training_run
        previous = read_run_record(self.run_record) if self.resumed_from else {}
        if previous.get("run_id"):
            tags["gdlseg.resumed_run_id"] = previous["run_id"]
        start = {"op": "start", "experiment": self.experiment_name, "run_name": self.run_name, "tags": tags}
        start.update(start_time=now_ms(), run_id=None, tracking_uri=self.tracking_uri)
        self._record(start, lambda: self._create_run(start))
        if self.params:
            self._record({"op": "params", "params": self.params})
        if previous.get("run_id") and previous.get("tracking_uri") == self.tracking_uri:
            self._end_abandoned(previous)
        self._write_run_record()
        if self.run_id:
            logger.info("MLflow run %s (%s) in %s", self.run_name, self.run_id, self.tracking_uri)
        return self

    def end(self, status: str = "FINISHED", error: BaseException | None = None) -> None:
        """End the run with ``status`` (FINISHED, FAILED, KILLED); ``error`` goes to the tag ``gdlseg.error``."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}, not {status!r}")
        if not self._started or self.status is not None:
            return
        self._stop_system_metrics()
        if self.enabled:
            if error is not None:
                self.set_tags({"gdlseg.error": f"{type(error).__name__}: {error}"[:MAX_TAG_LENGTH]})
            self._record({"op": "end", "status": status, "end_time": now_ms()})
            if self.spool is not None:
                logger.warning(
                    "MLflow: this %s run (%s) ended %s with records the store %s did not receive; they are in %s. "
                    "Send them with: gdlseg replay-tracking %s --tracking-uri %s",
                    self.job,
                    self.run_name,
                    status,
                    self.tracking_uri,
                    self.spool.path,
                    self.spool.path.parent,
                    self.tracking_uri,
                )
        self.status = status
        self.run_id = None

    # -- logging --------------------------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, timestamp_ms: int | None = None) -> None:
        """Log scalar metrics at ``step``."""
        stamp = now_ms() if timestamp_ms is None else timestamp_ms
        self.log_metric_rows([(key, float(value), stamp, int(step)) for key, value in metrics.items()])

    def log_metric_rows(self, rows: Sequence[tuple[str, float, int, int]]) -> None:
        """Log ``(key, value, timestamp_ms, step)`` rows in batches (one request per 1000)."""
        if rows and self._active():
            self._record({"op": "metrics", "metrics": [list(row) for row in rows]})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (nested mappings flattened with dots)."""
        flat = flatten(tags)
        if flat and self._active():
            self._record({"op": "tags", "tags": flat})

    def log_artifacts(self, paths: Sequence[os.PathLike | str]) -> None:
        """Upload files, and folders (under their own name); paths that do not exist are skipped."""
        existing = [str(Path(path).resolve()) for path in paths if Path(path).exists()]
        if existing and self._active():
            self._record({"op": "artifacts", "paths": existing})

    def log_dataset(self, dataset: Mapping[str, Any], context: str = "training") -> None:
        """Log a dataset input of the run (``name``, ``digest``, ``source_type``, ``source``, ``profile``;
        see :func:`gdlseg.tracking.inputs.datalist_dataset`), tagged with its ``context``."""
        if self._active():
            self._record({"op": "inputs", "dataset": dict(dataset), "context": context})

    def monitor_system(self, interval: float = 10.0) -> None:
        """Log MLflow's system metrics (``system/cpu_utilization_percentage``, ``system/system_memory_usage_*``,
        disk, network, and ``system/gpu_*`` when ``pynvml`` finds an NVIDIA GPU) every ``interval`` seconds
        until the run ends. MLflow's monitor sends them itself: they are not spooled, and sampling stops
        when the store cannot be reached. Without ``psutil`` a warning says so and the run goes on."""
        if not self._active() or self.run_id is None or self.spool is not None or self._monitor is not None:
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError as error:  # psutil missing: the training matters more than its system metrics
            logger.warning("MLflow system metrics are not logged: %s (pip install psutil).", error)
            return
        self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=interval, tracking_uri=self.tracking_uri)
        self._monitor.start()

    def register_model(self, name: str, alias: str | None = None, artifact_path: str = "model") -> None:
        """Register the model logged at ``artifact_path`` as a new version of ``name`` in the store's Model
        Registry (created if missing) and point ``alias`` at it; after the model's artifacts."""
        if name and self._active():
            self._record({"op": "register", "name": name, "alias": alias, "artifact_path": artifact_path})

    # -- internals ------------------------------------------------------------------------------
    def _active(self) -> bool:
        return self.enabled and self._started and self.status is None

    def _record(self, record: dict[str, Any], deliver: Callable[[], None] | None = None) -> None:
        """Send ``record`` (with :func:`send`, or ``deliver`` for the run's creation); if the store fails,
        or failed before, write it to the spool."""
        record["sent"] = False
        if self.spool is None:
            try:
                if not server_reachable(self.tracking_uri):
                    raise ConnectionError("its /health endpoint does not answer")
                if deliver is None:
                    send(self._client, self.run_id, record)
                else:
                    deliver()
                record["sent"] = True
                self._sent.append(record)
                return
            except Exception as error:  # any failure of the store: keep the record, stop contacting it
                self._go_offline(error)
        self.spool.append([record])

    def _stop_system_metrics(self) -> None:
        """Stop the system metrics monitor and send its last samples (before the run's end record).

        With the store lost, its thread is left to stop by itself at its next failed request: waiting
        for it would wait for MLflow's retries."""
        monitor, self._monitor = self._monitor, None
        if monitor is not None and self.spool is None:
            monitor.finish()

    def _go_offline(self, error: BaseException) -> None:
        self.spool = Spool(self.spool_path)
        self.spool.append(self._sent)
        self._sent = []
        logger.warning(
            "MLflow tracking store %s cannot be reached (%s): this %s runs on without it; what it does not "
            "receive is kept in %s.",
            self.tracking_uri,
            f"{type(error).__name__}: {error}"[:300],
            self.job,
            self.spool.path,
        )
        self._write_run_record()

    def _create_run(self, record: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = experiment_id(self._client, self.experiment_name, self.tracking_uri)
        run = self._client.create_run(
            experiment, start_time=record["start_time"], tags=record["tags"], run_name=self.run_name
        )
        self.run_id = record["run_id"] = run.info.run_id

    def _end_abandoned(self, previous: Mapping[str, Any]) -> None:
        """End KILLED the previous run of this output folder if it is RUNNING and its process is gone."""
        if self.spool is not None or previous.get("host") != socket.gethostname() or _alive(previous.get("pid")):
            return
        try:
            run = self._client.get_run(previous["run_id"])
            if run.info.status == "RUNNING":
                note = f"process {previous.get('pid')} died without ending the run (kill -9 or a crash); "
                self._client.set_tag(run.info.run_id, "gdlseg.error", note + f"resumed as run {self.run_id}")
                self._client.set_terminated(run.info.run_id, "KILLED")
        except Exception as error:  # the previous run may live in a store that no longer has it
            logger.warning("Could not end the interrupted run %s: %s", previous["run_id"], error)

    def _write_run_record(self) -> None:
        if self.run_record is None:
            return
        record = {"run_id": self.run_id, "run_name": self.run_name, "experiment": self.experiment_name}
        record.update(tracking_uri=self.tracking_uri, host=socket.gethostname(), pid=os.getpid())
        if self.spool is not None:
            record["spool"] = str(self.spool.path)
        self.run_record.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.run_record, record)


@contextmanager
def tracked_run(settings: RunSettings) -> Iterator[TrackedRun]:
    """An MLflow run around a block of code, for work without an Ignite engine (see :class:`TrackedRun`).

    The block's end sets the status: normal exit (or ``SystemExit(0)``) → FINISHED, ``KeyboardInterrupt``
    → KILLED, any other exception → FAILED (the exception propagates). In the main thread SIGTERM is
    turned into ``KeyboardInterrupt`` while the block runs, so ``kill`` also ends the run KILLED.
    """
    run = TrackedRun(settings)
    previous_handler = None
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous_handler = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        run.start()
        yield run
    except KeyboardInterrupt as error:
        run.end("KILLED", error)
        raise
    except SystemExit as error:
        run.end("FINISHED" if error.code in (None, 0) else "FAILED", None if error.code in (None, 0) else error)
        raise
    except BaseException as error:
        run.end("FAILED", error)
        raise
    else:
        run.end("FINISHED")
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous_handler is None else previous_handler)


def _alive(pid: Any) -> bool:
    """Whether process ``pid`` exists on this machine (unknown → assumed alive, nothing is touched)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    """A signal handler that turns SIGTERM into ``KeyboardInterrupt``, so ``kill`` ends a run KILLED."""
    raise KeyboardInterrupt(f"received signal {signal.Signals(signum).name}")
