"""MLflow tracking of every train, evaluate and infer run.

One implementation of a run's lifecycle, :class:`TrackedRun`, used two ways:

- ``with tracked_run(output_dir, job="evaluate", ...) as run:`` for code without an Ignite engine
  (the evaluate and infer commands);
- :class:`MLflowTracker`, an Ignite handler for MONAI trainers and evaluators (the bundle configs).

Each run

- is always a new, uniquely named run (an unfinished one is never resumed, so two trainings at once
  never merge), made through an explicit ``MlflowClient`` (no global active run);
- logs the hyperparameters it is given, flattened (``optimizer.lr``), version tags, the git commit
  when there is one, the training run it derives from (``gdlseg.training_run_id``), no patient paths;
- ends FINISHED, FAILED on an exception (tag ``gdlseg.error``), KILLED on Ctrl-C or SIGTERM;
- keeps going when the tracking store cannot be reached, at the start or in the middle of the run:
  a warning names the spool file ``<output_dir>/mlflow_spool/<run name>.jsonl`` that receives what
  could not be sent, for :func:`gdlseg.engines.tracking_spool.replay_spool` to send later.

Store: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite database
``<output_dir>/mlflow/mlflow.db`` with artifacts in ``<output_dir>/mlflow/artifacts``; the URI
``none`` disables tracking (no run, nothing spooled).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from gdlseg.data.atomic import write_json_atomically
from gdlseg.engines.outputs import iteration_loss
from gdlseg.engines.tracking_spool import BATCH_METRICS, BATCH_PARAMS, SPOOL_FOLDER, Spool

logger = logging.getLogger("gdlseg.tracking")
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 5000
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


def default_tracking_uri(output_dir: os.PathLike | str) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<output_dir>/mlflow/mlflow.db``."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = Path(output_dir).resolve() / "mlflow"
    return f"sqlite:///{folder / 'mlflow.db'}"


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` → ``{"a.b": "1", "c": "[1, 2]"}`` (MLflow params are strings)."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            if isinstance(value, torch.Tensor):
                value = value.tolist()
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def module_hyperparameters(module: torch.nn.Module, recurse: bool = True) -> dict[str, Any]:
    """A module's class and public settings (simple-valued attributes and buffers); with ``recurse``,
    its children's too (a compound loss's parts). A network is logged with ``recurse=False``: its
    constructor arguments, not every layer's."""
    values = _class_and_settings(module, skip={"training"})
    if recurse:
        for name, child in module.named_children():
            values[name] = module_hyperparameters(child)
    for name, buffer in module.named_buffers(recurse=False):
        values[name] = buffer.tolist() if buffer is not None else None
    return values


def optimizer_hyperparameters(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's class and its constructor settings (``lr``, ``weight_decay``, ``betas``, ...) as
    built, not as a learning-rate schedule has since changed them."""
    values: dict[str, Any] = {"class": _class_path(optimizer)}
    values.update({key: value for key, value in optimizer.defaults.items() if _is_simple(value)})
    return values


def scheduler_hyperparameters(scheduler: Any) -> dict[str, Any]:
    """A learning-rate scheduler's class and public settings (``warmup_steps``, ``t_total``, ...),
    without its position (``last_epoch``), which resuming changes."""
    return _class_and_settings(scheduler, skip={"last_epoch", "verbose"})


def _class_and_settings(component: Any, skip: set[str]) -> dict[str, Any]:
    values: dict[str, Any] = {"class": _class_path(component)}
    for key, value in vars(component).items():
        if not key.startswith("_") and key not in skip and _is_simple(value):
            values[key] = value
    return values


def _class_path(component: Any) -> str:
    return f"{type(component).__module__}.{type(component).__qualname__}"


def _is_simple(value: Any) -> bool:
    """None, a number, a string, or a list/tuple/dict made of them (what reads well as a param)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_simple(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_simple(item) for key, item in value.items())
    return False


def software_tags(bundle_root: os.PathLike | str | None = None) -> dict[str, str]:
    """Versions of gdlseg and its stack, and the git commit of ``bundle_root`` when it is in a checkout."""
    import mlflow
    import monai

    import gdlseg

    tags = {
        "gdlseg.version": gdlseg.__version__,
        "monai.version": monai.__version__,
        "torch.version": torch.__version__,
        "mlflow.version": mlflow.__version__,
        "python.version": platform.python_version(),
    }
    if bundle_root is not None:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=bundle_root, capture_output=True, text=True, timeout=10
            )
            if commit.returncode == 0:
                tags["git.commit"] = commit.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        metadata = Path(bundle_root) / "configs" / "metadata.json"
        if metadata.is_file():
            tags["bundle.version"] = str(json.loads(metadata.read_text()).get("version", "unknown"))
    return tags


def unique_run_name(job: str) -> str:
    """``<job>-<UTC time>-<6 random hex digits>``: unique even for runs started in the same second."""
    return f"{job}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, or None for any other store."""
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


def experiment_id(client, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created if missing (another run may create it at the same moment).

    A new experiment in a SQLite store keeps its artifacts in ``artifacts/`` next to the database.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    database = sqlite_database(tracking_uri)
    artifact_location = None if database is None else (database.parent / "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def server_reachable(uri: str, timeout: float = 5.0) -> bool:
    """False when ``uri`` is an HTTP(S) tracking server whose ``/health`` does not answer 200 within ``timeout``.

    Checked before each request: MLflow's own client retries an unreachable server for minutes.
    """
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def read_run_record(path: os.PathLike | str | None) -> dict[str, Any]:
    """The run record JSON (run id, tracking URI, ...) or ``{}`` when there is none."""
    if path is None or not Path(path).is_file():
        return {}
    return json.loads(Path(path).read_text())


def derived_run_tracking_uri(
    tracking_uri: str | None, disabled: bool, training_record: Mapping[str, Any]
) -> str | None:
    """The store of an evaluate or infer run that derives from a training, so it lands beside that training.

    ``"none"`` when ``disabled``; else ``tracking_uri`` when given; else None when ``$MLFLOW_TRACKING_URI``
    is set (:class:`TrackedRun` reads it); else the store named in the training's run record when it still
    exists (a server URI is taken as is); else None (the SQLite default in the run's own output folder).
    """
    if disabled:
        return "none"
    if tracking_uri:
        return tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    training_uri = training_record.get("tracking_uri")
    if isinstance(training_uri, str) and training_uri:
        database = sqlite_database(training_uri)
        if database is None or database.is_file():
            return training_uri
    return None


class TrackedRun:
    """One MLflow run, from creation to its final status; survives an unreachable store by spooling.

    Args:
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

    ``run_id`` is None before ``start()``, after the end, and when the store was unreachable at the start.
    """

    def __init__(
        self,
        output_dir: os.PathLike | str,
        job: str = "train",
        tracking_uri: str | None = None,
        experiment_name: str = "gdlseg",
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        bundle_root: os.PathLike | str | None = None,
        source_run_record: os.PathLike | str | None = None,
        run_record: os.PathLike | str | None = None,
        resumed_from: os.PathLike | str | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.job = job
        self.tracking_uri = tracking_uri or default_tracking_uri(output_dir)
        self.enabled = self.tracking_uri.strip().lower() != "none"
        self.experiment_name = experiment_name
        self.run_name = run_name or unique_run_name(job)
        self.params = flatten(params or {})
        self.extra_tags = flatten(tags or {})
        self.bundle_root = bundle_root
        self.source_run_record = Path(source_run_record) if source_run_record else None
        self.run_record = Path(run_record) if run_record else None
        self.resumed_from = resumed_from
        self.run_id: str | None = None
        self.status: str | None = None
        self.spool: Spool | None = None
        self._client = None
        self._started = False
        self._sent: list[dict[str, Any]] = []  # every record sent, for a complete spool if the store goes away

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
        start.update(start_time=_now_ms(), run_id=None, tracking_uri=self.tracking_uri)
        self._record(start, lambda: self._create_run(start))
        if self.params:
            self._record({"op": "params", "params": self.params}, lambda: self._send_params(self.params))
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
        if self.enabled:
            if error is not None:
                self.set_tags({"gdlseg.error": f"{type(error).__name__}: {error}"[:MAX_TAG_LENGTH]})
            record = {"op": "end", "status": status, "end_time": _now_ms()}
            self._record(record, lambda: self._client.set_terminated(self.run_id, status, end_time=record["end_time"]))
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
        stamp = _now_ms() if timestamp_ms is None else timestamp_ms
        self.log_metric_rows([(key, float(value), stamp, int(step)) for key, value in metrics.items()])

    def log_metric_rows(self, rows: Sequence[tuple[str, float, int, int]]) -> None:
        """Log ``(key, value, timestamp_ms, step)`` rows in batches (one request per 1000)."""
        if rows and self._active():
            record = {"op": "metrics", "metrics": [list(row) for row in rows]}
            self._record(record, lambda: self._send_metrics(rows))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        flat = flatten(tags)
        if flat and self._active():
            self._record({"op": "tags", "tags": flat}, lambda: self._send_tags(flat))

    def log_artifacts(self, paths: Sequence[os.PathLike | str]) -> None:
        """Upload files, and folders (under their own name); paths that do not exist are skipped."""
        existing = [str(Path(path).resolve()) for path in paths if Path(path).exists()]
        if existing and self._active():
            self._record({"op": "artifacts", "paths": existing}, lambda: self._send_artifacts(existing))

    # -- internals ------------------------------------------------------------------------------
    def _active(self) -> bool:
        return self.enabled and self._started and self.status is None

    def _record(self, record: dict[str, Any], send: Callable[[], None]) -> None:
        """Send ``record`` with ``send``; if the store fails, or failed before, write it to the spool."""
        record["sent"] = False
        if self.spool is None:
            try:
                if not server_reachable(self.tracking_uri):
                    raise ConnectionError("its /health endpoint does not answer")
                send()
                record["sent"] = True
                self._sent.append(record)
                return
            except Exception as error:  # any failure of the store: keep the record, stop contacting it
                self._go_offline(error)
        self.spool.append([record])

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

    def _send_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        entries = [Param(key, value) for key, value in params.items()]
        for first in range(0, len(entries), BATCH_PARAMS):
            self._client.log_batch(self.run_id, params=entries[first : first + BATCH_PARAMS])

    def _send_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self._client.log_batch(self.run_id, tags=[RunTag(key, value[:MAX_TAG_LENGTH]) for key, value in tags.items()])

    def _send_metrics(self, rows: Sequence[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        entries = [Metric(key, value, stamp, step) for key, value, stamp, step in rows]
        for first in range(0, len(entries), BATCH_METRICS):
            self._client.log_batch(self.run_id, metrics=entries[first : first + BATCH_METRICS])

    def _send_artifacts(self, paths: Sequence[str]) -> None:
        for path in map(Path, paths):
            if path.is_file():
                self._client.log_artifact(self.run_id, str(path))
            else:
                self._client.log_artifacts(self.run_id, str(path), artifact_path=path.name)

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
def tracked_run(
    output_dir: os.PathLike | str,
    job: str = "evaluate",
    tracking_uri: str | None = None,
    experiment_name: str = "gdlseg",
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    bundle_root: os.PathLike | str | None = None,
    source_run_record: os.PathLike | str | None = None,
) -> Iterator[TrackedRun]:
    """An MLflow run around a block of code, for work without an Ignite engine (see :class:`TrackedRun`).

    The block's end sets the status: normal exit (or ``SystemExit(0)``) → FINISHED, ``KeyboardInterrupt``
    → KILLED, any other exception → FAILED (the exception propagates). In the main thread SIGTERM is
    turned into ``KeyboardInterrupt`` while the block runs, so ``kill`` also ends the run KILLED.
    """
    run = TrackedRun(
        output_dir,
        job=job,
        tracking_uri=tracking_uri,
        experiment_name=experiment_name,
        run_name=run_name,
        params=params,
        tags=tags,
        bundle_root=bundle_root,
        source_run_record=source_run_record,
    )
    previous_handler = None
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
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


class MLflowTracker:
    """Track one run (train, evaluate or infer) of a MONAI engine in MLflow, through a :class:`TrackedRun`.

    Args:
        output_dir, job, tracking_uri, experiment_name, run_name, params, tags, bundle_root,
            run_record, source_run_record, resumed_from: as for :class:`TrackedRun`.
        optimizer: logged learning rate per iteration (trainer only).
        evaluator: (train) the validation engine; its metrics are logged at the trainer's epoch. Evaluate
            and infer runs log the metrics of the engine they are attached to.
        artifacts: callables returning paths (or paths), logged when the run ends, whatever its status.
        log_every: log the training loss and learning rate every N iterations (sent once per epoch).
    """

    def __init__(
        self,
        output_dir: os.PathLike | str,
        job: str = "train",
        tracking_uri: str | None = None,
        experiment_name: str = "gdlseg",
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        bundle_root: os.PathLike | str | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        evaluator: Engine | None = None,
        artifacts: Sequence[Callable[[], Sequence[os.PathLike | str]] | os.PathLike | str] = (),
        run_record: os.PathLike | str | None = None,
        source_run_record: os.PathLike | str | None = None,
        log_every: int = 1,
        resumed_from: os.PathLike | str | None = None,
    ) -> None:
        self._run_settings = dict(
            output_dir=output_dir,
            job=job,
            tracking_uri=tracking_uri,
            experiment_name=experiment_name,
            run_name=run_name,
            params=params,
            tags=tags,
            bundle_root=bundle_root,
            source_run_record=source_run_record,
            run_record=run_record,
            resumed_from=resumed_from,
        )
        self.job = job
        self.optimizer = optimizer
        self.evaluator = evaluator
        self.artifacts = list(artifacts)
        self.log_every = max(1, int(log_every))
        self.run: TrackedRun | None = None
        self.trainer: Engine | None = None
        self._pending: list[tuple[str, float, int, int]] = []

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else self.run.run_id

    # -- wiring ---------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        """Register on ``engine`` (a MONAI trainer or evaluator)."""
        self.trainer = engine
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.COMPLETED, self.complete)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.fail)
        if self.job == "train":
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.log_every), self.log_iteration)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.flush)
        evaluator = self.evaluator if self.job == "train" else engine
        if evaluator is not None:
            # Before COMPLETED's own handlers on an evaluator: its metrics must be logged before the run ends.
            evaluator.add_event_handler(Events.EPOCH_COMPLETED, self.log_evaluation)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)

    # -- engine events --------------------------------------------------------------------------
    def start(self, engine: Engine | None = None) -> None:
        """A new run (a second ``engine.run()`` gets another one)."""
        if self.run is None or self.run.status is not None:
            self.run = TrackedRun(**self._run_settings).start()

    def log_iteration(self, engine: Engine) -> None:
        """Buffer the training loss and learning rate of the current iteration."""
        stamp, step = _now_ms(), engine.state.iteration
        self._pending.append(("train_loss", iteration_loss(engine.state.output), stamp, step))
        if self.optimizer is not None:
            self._pending.append(("learning_rate", float(self.optimizer.param_groups[0]["lr"]), stamp, step))

    def flush(self, engine: Engine | None = None) -> None:
        """Send the buffered per-iteration metrics (one request per epoch instead of one per iteration)."""
        if self.run is not None and self._pending:
            self.run.log_metric_rows(self._pending)
        self._pending = []

    def log_evaluation(self, evaluator: Engine) -> None:
        """The evaluator's finite scalar metrics, at the trainer's epoch (step 0 for evaluate/infer)."""
        if self.run is None:
            return
        step = self.trainer.state.epoch if self.trainer is not None and self.job == "train" else 0
        metrics = {k: float(v) for k, v in evaluator.state.metrics.items() if _is_scalar(v)}
        self.run.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step)

    def complete(self, engine: Engine) -> None:
        """Log the artifacts and end the run FINISHED."""
        if self.run is None:
            return
        self.flush()
        self._log_artifacts()
        self.run.end("FINISHED")

    def _log_artifacts(self) -> None:
        paths: list[os.PathLike | str] = []
        for item in self.artifacts:
            paths.extend(item() if callable(item) else [item])
        self.run.log_artifacts(paths)

    def fail(self, engine: Engine, error: BaseException) -> None:
        """Log the artifacts as they are (the reports up to the last epoch, the best model so far) and
        end the run KILLED (Ctrl-C, SIGTERM) or FAILED (any other exception).

        Ignite swallows an exception unless an EXCEPTION_RAISED handler re-raises it, and stops at the
        first that does: this one re-raises only when no other such handler follows it (MONAI's
        StatsHandler and CheckpointSaver re-raise after their own work).
        """
        if self.run is not None:
            self.flush()
            try:
                self._log_artifacts()
            except Exception as upload_error:  # the run's own error is what must reach the user
                logger.warning("artifacts of the %s run not logged: %s", self.job, upload_error)
            self.run.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED", error)
        handlers = [entry[0] for entry in engine._event_handlers[Events.EXCEPTION_RAISED]]
        if not handlers or getattr(handlers[-1], "__self__", None) is self:
            raise error


def _now_ms() -> int:
    return int(time.time() * 1000)


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


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"received signal {signal.Signals(signum).name}")
