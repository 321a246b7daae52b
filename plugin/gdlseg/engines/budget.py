"""How long a training runs: epochs derived from the data and the device, a wall-clock limit, early stopping.

- :func:`training_epochs` — ``max_epochs: auto`` aims at a number of optimiser steps,
  ``TARGET_STEPS[device type]``, whatever the dataset size: ``epochs = ceil(steps / steps_per_epoch)``
  (the data loader's length), clipped to ``[EPOCH_RANGE]``. A small
  dataset gets many short epochs and a large one few long ones, as Auto3DSeg scales its epochs with the
  number of cases; a CPU aims lower than a GPU, whose steps are ~50× cheaper. 1500 steps of the
  ``cpu_fast`` recipe are 10–20 minutes on 2 CPU cores at 64³ patches, several times the budget at which
  ``scripts/bench_learning.py`` compares recipes; 25000 is a tenth of nnU-Net's 250 000 steps
  (1000 epochs × 250): set ``max_epochs`` for a longer GPU run. ``max_minutes`` caps either.
- :func:`validation_interval` — ``val_interval: auto`` validates about ``VALIDATIONS_PER_RUN`` times.
- :class:`TimeBudget` — ``max_minutes``: at every epoch end it re-plans the run to end by the
  deadline at the mean epoch time so far (fewer epochs, and the learning-rate schedule's length with
  them, so that the cosine decay still finishes with the run). It only ever
  shortens a run. Limit or not, the last epoch is validated when the interval would have skipped it.
- :class:`StopOnPlateau` — ``early_stopping_patience``: stops after that many validations without a
  better validation metric (ignite's ``EarlyStopping`` rule, as MONAI's ``EarlyStopHandler``, with the
  reason recorded and its counters saved in checkpoints so that a resumed run continues counting).

Whatever ends the run is recorded on the trainer as ``state.stop_reason`` (``max_epochs``,
``time_limit`` or ``early_stopping``), which the MLflow tracker logs as the run's ``gdlseg.stopped_by`` tag.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
from ignite.engine import Engine, Events

from gdlseg.settings import is_unset

logger = logging.getLogger(__name__)

TARGET_STEPS = {"cpu": 1500, "cuda": 25000}
EPOCH_RANGE = (10, 1000)
VALIDATIONS_PER_RUN = 20


def _is_auto(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() == "auto")


def training_epochs(max_epochs: int | str | None, steps_per_epoch: int, device: torch.device | str) -> int:
    """``max_epochs`` when it is a number, else the derived count (see the module docstring);
    ``steps_per_epoch`` is the training data loader's length (this process's share under torchrun).

    Raises:
        ValueError: a number below 1 or a word other than ``auto``, naming the ID.
    """
    if not _is_auto(max_epochs):
        return _positive(max_epochs, "max_epochs")
    steps_per_epoch = max(1, int(steps_per_epoch))
    kind = torch.device(device).type
    target = TARGET_STEPS.get(kind, TARGET_STEPS["cuda"])
    low, high = EPOCH_RANGE
    return int(min(max(math.ceil(target / steps_per_epoch), low), high))


def validation_interval(val_interval: int | str | None, epochs: int) -> int:
    """``val_interval`` when it is a number, else ``max(1, epochs // VALIDATIONS_PER_RUN)``.

    Raises:
        ValueError: a number below 1 or a word other than ``auto``.
    """
    if not _is_auto(val_interval):
        return _positive(val_interval, "val_interval")
    return max(1, int(epochs) // VALIDATIONS_PER_RUN)


def _positive(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number ≥ 1 or 'auto', got {value!r}.") from None
    if number < 1 or number != float(value):
        raise ValueError(f"{name} must be a whole number ≥ 1 or 'auto', got {value!r}.")
    return number


def minutes_limit(max_minutes: float | str | None) -> float | None:
    """``max_minutes`` as a positive number, or None (no limit) for null/none/0.

    Raises:
        ValueError: not a number, or negative.
    """
    if is_unset(max_minutes):
        return None
    try:
        minutes = float(max_minutes)
    except (TypeError, ValueError):
        raise ValueError(f"max_minutes must be a number of minutes or null, got {max_minutes!r}.") from None
    if minutes < 0 or not math.isfinite(minutes):
        raise ValueError(f"max_minutes must be a positive number of minutes or null, got {max_minutes!r}.")
    return minutes or None


def record_stop(engine: Engine, reason: str) -> None:
    """Remember why ``engine`` ends (the first reason wins) and ask it to stop after this epoch."""
    if getattr(engine.state, "stop_reason", None) is None:
        engine.state.stop_reason = reason
    engine.terminate()


def _slowest_process(seconds: float) -> float:
    """The largest of ``seconds`` over the processes of a torchrun job (itself in one process), so that
    every rank takes the same decision and none waits alone in a collective."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return seconds
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value.item())


class TimeBudget:
    """Ends a training by ``max_minutes`` of wall-clock time in this process (a resumed run gets a fresh
    budget), at an epoch boundary so that every epoch is whole and its checkpoint written. With or
    without a limit, the last epoch is validated when the interval skipped it, so that the final
    weights are always a candidate for the best model.

    Args:
        max_minutes: the limit; None or 0: no limit.
        lr_scheduler: a scheduler with ``t_total`` (MONAI ``WarmupCosineSchedule``) re-planned with the run.
        validator: the evaluator to run once more when the last epoch was not validated.
        val_interval: the epochs between validations (to know whether the last one was validated).
    """

    def __init__(
        self,
        max_minutes: float | str | None,
        lr_scheduler: Any = None,
        validator: Any = None,
        val_interval: int = 1,
    ) -> None:
        self.seconds = None if minutes_limit(max_minutes) is None else 60.0 * minutes_limit(max_minutes)
        self.lr_scheduler, self.validator, self.val_interval = lr_scheduler, validator, max(1, int(val_interval))
        self.started: float | None = None
        self.first_epoch: int | None = None
        self.replanned_epochs: int | None = None

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.STARTED, self._start)
        # After the handlers attached earlier (validation, checkpoints): the epoch is finished when this runs.
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._check)

    def _start(self, trainer: Engine) -> None:
        # Runs after the checkpoint loader: a resumed run counts from its restored epoch, and a run that
        # was re-planned before it stopped keeps its shortened length (its schedule was saved shortened).
        self.started, self.first_epoch = time.monotonic(), trainer.state.epoch
        if self.replanned_epochs is not None:
            trainer.state.max_epochs = max(trainer.state.epoch, min(trainer.state.max_epochs, self.replanned_epochs))

    def state_dict(self) -> dict[str, Any]:
        return {"replanned_epochs": self.replanned_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.replanned_epochs = state.get("replanned_epochs")

    def _validate_unless_done(self, trainer: Engine) -> None:
        if self.validator is not None and trainer.state.epoch % self.val_interval:
            self.validator.run(trainer.state.epoch)  # MONAI's evaluators take the trainer's epoch

    def _check(self, trainer: Engine) -> None:
        if self.seconds is None:
            if trainer.state.epoch >= trainer.state.max_epochs:  # the final weights are always a candidate
                self._validate_unless_done(trainer)
            return
        elapsed = _slowest_process(time.monotonic() - self.started)
        # The mean epoch so far, validations included, re-estimated at every epoch end.
        per_epoch = elapsed / max(1, trainer.state.epoch - self.first_epoch)
        self._replan(trainer, per_epoch, elapsed)
        if trainer.state.epoch < trainer.state.max_epochs:
            return
        self._validate_unless_done(trainer)
        if self.replanned_epochs is not None:
            logger.info("max_minutes: %.1f min used; the re-planned run ends here.", elapsed / 60)
            trainer.state.stop_reason = getattr(trainer.state, "stop_reason", None) or "time_limit"

    def _replan(self, trainer: Engine, per_epoch: float, elapsed: float) -> None:
        """Fewer epochs when the planned ones do not fit in what is left of the limit, with the
        schedule shortened to match (the cosine then still ends with the run)."""
        fitting = trainer.state.epoch + int(max(0.0, self.seconds - elapsed) // max(per_epoch, 1e-9))
        if fitting >= trainer.state.max_epochs:
            return
        fitting = max(trainer.state.epoch, fitting)
        steps_per_epoch = trainer.state.epoch_length or 1
        trainer.state.max_epochs = fitting
        self.replanned_epochs = fitting
        if self.lr_scheduler is not None and hasattr(self.lr_scheduler, "t_total"):
            self.lr_scheduler.t_total = max(
                fitting * steps_per_epoch, getattr(self.lr_scheduler, "warmup_steps", 0) + 1
            )
        logger.info("max_minutes: %.1f s per epoch, the run is re-planned to %d epochs.", per_epoch, fitting)


class StopOnPlateau:
    """Early stopping: ends the training after ``patience`` validations in a row without the
    ``metric`` improving on its best by more than ``min_delta`` (ignite's rule, which MONAI's
    ``EarlyStopHandler`` wraps), recording the reason. ``patience`` None disables it."""

    def __init__(self, patience: int | str | None, metric: str = "val_mean_dice", min_delta: float = 0.0) -> None:
        self.patience = None if is_unset(patience) else _positive(patience, "early_stopping_patience")
        self.metric, self.min_delta = metric, float(min_delta)
        self.best: float | None = None
        self.waited = 0

    def attach(self, evaluator: Engine, trainer: Engine) -> None:
        if self.patience is None:
            return
        evaluator.add_event_handler(Events.COMPLETED, self._check, trainer)

    def _check(self, evaluator: Engine, trainer: Engine) -> None:
        score = float(evaluator.state.metrics[self.metric])
        if not math.isfinite(score):
            return  # a NaN validation neither sets the best nor counts as a plateau
        if self.best is None or score > self.best + self.min_delta:
            self.best, self.waited = score, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            logger.info("early stopping: %s has not improved for %d validations.", self.metric, self.waited)
            record_stop(trainer, "early_stopping")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "waited": self.waited}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.waited = state["best"], int(state["waited"])
