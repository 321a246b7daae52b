"""MLflow tracking of a MONAI trainer or evaluator: the Ignite handler :class:`MLflowTracker` of the
bundle configs. The run itself (creation, spooling, final status) is a :class:`gdlseg.tracking.TrackedRun`."""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from gdlseg.engines.outputs import iteration_loss
from gdlseg.tracking.crossval import PARENT_RUN_TAG, cross_validation_run
from gdlseg.tracking.inputs import datalist_dataset
from gdlseg.tracking.run import RunSettings, TrackedRun, raise_keyboard_interrupt
from gdlseg.tracking.store import default_tracking_uri, now_ms

logger = logging.getLogger("gdlseg.tracking")
MODEL_FOLDER = "mlflow_model"  # beside the best weights: the MLflow model folders before upload


class MLflowTracker:
    """Track one run (train, evaluate or infer) of a MONAI engine in MLflow, through a :class:`TrackedRun`.

    Args:
        output_dir, job, tracking_uri, experiment_name, run_name, params, tags, bundle_root,
            run_record, source_run_record, resumed_from: as for :class:`gdlseg.tracking.RunSettings`.
        optimizer: logged learning rate per iteration (trainer only).
        evaluator: (train) the validation engine; its metrics are logged at the trainer's epoch. Evaluate
            and infer runs log the metrics of the engine they are attached to.
        artifacts: callables returning paths (or paths), logged when the run ends, whatever its status.
        log_every: log the training loss and learning rate every N iterations (sent once per epoch).
        datalist: (train) the datalist JSON, logged as the run's dataset input (case names, no paths).
        model_weights: (train) the best weights (``model.pt``, ``training.json`` beside it); a FINISHED
            run logs them as the MLflow models ``model`` (pyfunc) and ``pytorch_model``, written first to
            ``mlflow_model/`` beside the weights. A FAILED or KILLED run logs only the files.
        registered_model_name: register the ``model`` of a FINISHED run as a new version of this name.
        registered_model_alias: the alias the new version gets (e.g. ``champion``).
        system_metrics: (train) log MLflow's system metrics (CPU, memory, GPU when present) during the run.
        system_metrics_interval: seconds between two samples of the system metrics.
        fold: (train) the cross-validation fold this run trains, or None: the run gets the tag ``fold`` and is
            nested (tag ``mlflow.parentRunId``) under the cross-validation's parent run, created when the
            first fold starts (:func:`gdlseg.tracking.crossval.cross_validation_run`).
        num_folds: (train, with ``fold``) the number of folds, a tag of the parent run.
        crossval_dir: (train, with ``fold``) the cross-validation's folder (``crossval.json``, ``splits.json``);
            default ``output_dir``.
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
        datalist: os.PathLike | str | None = None,
        model_weights: os.PathLike | str | None = None,
        registered_model_name: str | None = None,
        registered_model_alias: str | None = None,
        system_metrics: bool = False,
        system_metrics_interval: float = 10.0,
        fold: int | None = None,
        num_folds: int | None = None,
        crossval_dir: os.PathLike | str | None = None,
    ) -> None:
        if registered_model_alias and not registered_model_name:
            raise ValueError(f"registered_model_alias {registered_model_alias!r} needs a registered_model_name.")
        self.settings = RunSettings(
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
        self.datalist = datalist
        self.model_weights = model_weights
        self.registered_model_name = registered_model_name or None
        self.registered_model_alias = registered_model_alias or None
        self.system_metrics = system_metrics
        self.system_metrics_interval = float(system_metrics_interval)
        self.fold = None if fold is None else int(fold)
        self.num_folds = num_folds
        self.crossval_dir = crossval_dir if crossval_dir is not None else output_dir
        self.run: TrackedRun | None = None
        self.trainer: Engine | None = None
        self._pending: list[tuple[str, float, int, int]] = []

    @property
    def run_id(self) -> str | None:
        """The id of the current run (None before the engine starts and once the run has ended)."""
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
            signal.signal(signal.SIGTERM, raise_keyboard_interrupt)

    # -- engine events --------------------------------------------------------------------------
    def start(self, engine: Engine | None = None) -> None:
        """A new run (a second ``engine.run()`` gets another one)."""
        if self.run is None or self.run.status is not None:
            self.run = TrackedRun(self._run_settings()).start()
            if self.datalist is not None and self.job == "train":
                self.run.log_dataset(datalist_dataset(self.datalist))
            if self.system_metrics and self.job == "train":
                self.run.monitor_system(self.system_metrics_interval)

    def _run_settings(self) -> RunSettings:
        """The run's settings; a fold's run gets its fold and its cross-validation's parent run as tags."""
        if self.fold is None:
            return self.settings
        settings = self.settings
        tracking_uri = settings.tracking_uri or default_tracking_uri(settings.output_dir)
        parent = cross_validation_run(
            self.crossval_dir, tracking_uri, settings.experiment_name, self.num_folds, settings.bundle_root
        )
        tags = {**(settings.tags or {}), "fold": str(self.fold)}
        if parent is not None:
            tags[PARENT_RUN_TAG] = parent
        return replace(settings, tags=tags)

    def log_iteration(self, engine: Engine) -> None:
        """Buffer the training loss and learning rate of the current iteration."""
        stamp, step = now_ms(), engine.state.iteration
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
        if self.job == "train":
            # Why the training ended (engines/budget.py sets the reason when it stops one early).
            self.run.set_tags({"gdlseg.stopped_by": getattr(engine.state, "stop_reason", None) or "max_epochs"})
            self.run.log_metrics({"epochs_completed": float(engine.state.epoch)}, engine.state.epoch)
        self._log_artifacts()
        self._log_model()
        self.run.end("FINISHED")

    def _log_model(self) -> None:
        """The best weights as MLflow models, registered when asked (train runs with weights only)."""
        if self.job != "train" or self.model_weights is None or not self.run.enabled:
            return
        weights = Path(self.model_weights)
        if not weights.is_file():
            logger.warning("No best model (%s) at the end of the training: no MLflow model logged.", weights.name)
            return
        from gdlseg.inference.mlflow_model import PYFUNC_PATH, save_mlflow_models  # imports mlflow.pyfunc: slow

        try:
            folders = save_mlflow_models(weights, self.settings.bundle_root or ".", weights.parent / MODEL_FOLDER)
        except Exception as error:  # the training itself succeeded: its run still ends FINISHED, with the reason
            logger.warning("The best model could not be saved as an MLflow model: %s", error)
            self.run.set_tags({"gdlseg.model_error": f"{type(error).__name__}: {error}"})
            return
        self.run.log_artifacts(folders)
        if self.registered_model_name:
            self.run.register_model(self.registered_model_name, self.registered_model_alias, PYFUNC_PATH)

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


def _is_scalar(value: Any) -> bool:
    """A number, or a tensor holding one."""
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, (int, float)) and not isinstance(value, bool)
