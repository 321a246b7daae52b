"""MLflow tracking of every train, evaluate and infer run, as one Ignite handler.

Unlike ``monai.bundle run --tracking mlflow`` this handler

- always creates a new, uniquely named run (never resumes an unfinished one, so two trainings at
  once never merge) through an explicit ``MlflowClient`` (no global active run);
- logs the effective hyperparameters it is given, flattened (``optimizer.lr``), version tags, the
  git commit when there is one, and a dataset fingerprint (no patient paths);
- logs training loss and learning rate per iteration (sent once per epoch) and the evaluator's
  metrics per epoch;
- ends the run FINISHED, FAILED on an exception, KILLED on Ctrl-C or SIGTERM;
- keeps training when the tracking server cannot be reached, with a warning.

Store: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite database
``<output_dir>/mlflow/mlflow.db`` with artifacts in ``<output_dir>/mlflow/artifacts``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from gdlseg.data.atomic import write_json_atomically
from gdlseg.engines.outputs import iteration_loss

logger = logging.getLogger("gdlseg.tracking")
MAX_PARAM_LENGTH = 6000


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


def module_hyperparameters(module: torch.nn.Module) -> dict[str, Any]:
    """The public, simple-valued attributes of a module (a loss's settings), with its class name."""
    values: dict[str, Any] = {"class": f"{type(module).__module__}.{type(module).__name__}"}
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training":
            continue
        if isinstance(value, (bool, int, float, str)) or value is None:
            values[key] = value
    for name, child in module.named_children():
        values[name] = module_hyperparameters(child)
    for name, buffer in module.named_buffers(recurse=False):
        values[name] = buffer.tolist() if buffer is not None else None
    return values


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


def _server_reachable(uri: str, timeout: float = 5.0) -> bool:
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


class MLflowTracker:
    """Track one run (train, evaluate or infer) of a MONAI engine in MLflow.

    Args:
        output_dir: where the default SQLite store lives (``<output_dir>/mlflow``) and local files go.
        job: "train", "evaluate" or "infer"; prefixes the generated run name and is a tag.
        tracking_uri: MLflow tracking URI; None → ``$MLFLOW_TRACKING_URI`` or the SQLite default.
        experiment_name: created if missing.
        run_name: the run's name; None → ``<job>-<UTC time>-<random>``, unique.
        params: hyperparameters, nested dicts allowed (flattened with dots).
        tags: extra tags (e.g. a dataset fingerprint); nested dicts are flattened.
        bundle_root: for the bundle version and git commit tags.
        optimizer: logged learning rate per iteration (trainer only).
        evaluator: (train) the validation engine; its metrics are logged at the trainer's epoch. Evaluate
            and infer runs log the metrics of the engine they are attached to.
        artifacts: callables returning paths (or paths) logged when the run ends well.
        run_record: a JSON file that receives the run id and tracking URI (for later evaluation and
            inference runs to point back at this training).
        source_run_record: for evaluate/infer: the training's ``run_record``; its run id becomes the
            ``gdlseg.training_run_id`` tag.
        log_every: log the training loss and learning rate every N iterations.
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
    ) -> None:
        self.output_dir = Path(output_dir)
        self.job = job
        self.tracking_uri = tracking_uri or default_tracking_uri(output_dir)
        self.experiment_name = experiment_name
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        self.run_name = run_name or f"{job}-{stamp}-{uuid.uuid4().hex[:6]}"
        self.params = dict(params or {})
        self.tags = dict(tags or {})
        self.bundle_root = bundle_root
        self.optimizer = optimizer
        self.evaluator = evaluator
        self.artifacts = list(artifacts)
        self.run_record = Path(run_record) if run_record else None
        self.source_run_record = Path(source_run_record) if source_run_record else None
        self.log_every = max(1, int(log_every))
        self.client = None
        self.run_id: str | None = None
        self.trainer: Engine | None = None
        self._pending: list[tuple[dict[str, float], int, int]] = []

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

    # -- run lifecycle --------------------------------------------------------------------------
    def start(self, engine: Engine) -> None:
        """Create the experiment if needed and a new run; log params and tags."""
        if self.run_id is not None:
            return
        if not _server_reachable(self.tracking_uri):
            logger.warning(
                "MLflow tracking server %s cannot be reached: this %s runs on without tracking.",
                self.tracking_uri,
                self.job,
            )
            return
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment_id = self._experiment_id()
        tags = {"gdlseg.job": self.job, **software_tags(self.bundle_root), **flatten(self.tags)}
        training_run = self._source_run_id()
        if training_run:
            tags["gdlseg.training_run_id"] = training_run
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(key, value) for key, value in flatten(self.params).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        if self.run_record is not None:
            self.run_record.parent.mkdir(parents=True, exist_ok=True)
            record = {"run_id": self.run_id, "run_name": self.run_name, "experiment": self.experiment_name}
            record["tracking_uri"] = self.tracking_uri
            write_json_atomically(self.run_record, record)
        logger.info("MLflow run %s (%s) in %s", self.run_name, self.run_id, self.tracking_uri)

    def _experiment_id(self) -> str:
        """The experiment's id, creating it if needed (another run may create it at the same moment)."""
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        artifact_location = None
        if self.tracking_uri.startswith("sqlite:"):
            artifact_location = (Path(self.tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
        try:
            return self.client.create_experiment(self.experiment_name, artifact_location=artifact_location)
        except MlflowException:
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _source_run_id(self) -> str | None:
        if self.source_run_record is None or not self.source_run_record.is_file():
            return None
        return json.loads(self.source_run_record.read_text()).get("run_id")

    def log_iteration(self, engine: Engine) -> None:
        """Training loss and learning rate of the current iteration."""
        if self.run_id is None:
            return
        metrics = {"train_loss": iteration_loss(engine.state.output)}
        if self.optimizer is not None:
            metrics["learning_rate"] = float(self.optimizer.param_groups[0]["lr"])
        self._pending.append((metrics, engine.state.iteration, int(time.time() * 1000)))

    def flush(self, engine: Engine | None = None) -> None:
        """Send the buffered per-iteration metrics (one request per epoch instead of one per iteration)."""
        if self.run_id is None or not self._pending:
            return
        from mlflow.entities import Metric

        entries = [Metric(k, v, stamp, step) for metrics, step, stamp in self._pending for k, v in metrics.items()]
        self._pending = []
        for start in range(0, len(entries), 1000):
            self.client.log_batch(self.run_id, metrics=entries[start : start + 1000])

    def log_evaluation(self, evaluator: Engine) -> None:
        """The evaluator's scalar metrics, at the trainer's epoch."""
        if self.run_id is None:
            return
        step = self.trainer.state.epoch if self.trainer is not None and self.job == "train" else 0
        metrics = {k: float(v) for k, v in evaluator.state.metrics.items() if _is_scalar(v)}
        self._log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step)

    def _log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(key, value, now, step) for key, value in metrics.items()]
        if entries:
            self.client.log_batch(self.run_id, metrics=entries)

    def complete(self, engine: Engine) -> None:
        """Log artifacts and end the run FINISHED."""
        if self.run_id is None:
            return
        self.flush()
        for item in self.artifacts:
            for path in item() if callable(item) else [item]:
                if Path(path).is_file():
                    self.client.log_artifact(self.run_id, str(path))
                elif Path(path).is_dir():
                    self.client.log_artifacts(self.run_id, str(path), artifact_path=Path(path).name)
        self.client.set_terminated(self.run_id, "FINISHED")
        self.run_id = None

    def fail(self, engine: Engine, error: BaseException) -> None:
        """End the run KILLED (Ctrl-C, SIGTERM) or FAILED (any other exception).

        Ignite swallows an exception unless an EXCEPTION_RAISED handler re-raises it, and stops at the
        first that does: this one re-raises only when no other such handler follows it (MONAI's
        StatsHandler and CheckpointSaver re-raise after their own work).
        """
        if self.run_id is not None:
            self.flush()
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            self.client.set_tag(self.run_id, "gdlseg.error", f"{type(error).__name__}: {error}"[:5000])
            self.client.set_terminated(self.run_id, status)
            self.run_id = None
        handlers = [entry[0] for entry in engine._event_handlers[Events.EXCEPTION_RAISED]]
        if not handlers or getattr(handlers[-1], "__self__", None) is self:
            raise error


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"received signal {signal.Signals(signum).name}")
