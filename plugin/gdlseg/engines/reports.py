"""Files a run leaves for people: metrics CSV, training curves, class distribution, overlays."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml
from ignite.engine import Engine, Events

from gdlseg.data.atomic import write_csv_atomically, write_json_atomically, write_text_atomically
from gdlseg.engines.outputs import iteration_loss
from gdlseg.engines.run_config import executed_config
from gdlseg.evaluation.plots import pyplot, save_class_distribution, save_figure, save_overlay
from gdlseg.evaluation.report import summarize

__all__ = ["EvaluationReport", "TrainingReport", "save_class_distribution", "save_overlay"]


class TrainingReport:
    """Write ``<output_dir>/reports``: ``metrics.csv`` (per epoch), ``training_curves.png``,
    ``class_distribution.png``, ``overlay_validation_case<K>.png`` for the first ``overlays``
    validation cases at the latest validation (numbered, not named: case names can identify
    patients), and ``executed_config.yaml`` when run by ``python -m monai.bundle run``.

    The CSV is rewritten after every epoch, the curves after every validation and at the end, so a run
    that fails, is stopped or is killed still leaves (and its FAILED or KILLED MLflow run still gets) its
    history.
    A resumed training keeps the rows of the epochs before the one it resumes at.

    Args:
        output_dir: the run's output folder.
        evaluator: the validation engine (its metrics per validation).
        class_names: names of the output channels.
        class_volumes: training-label class volumes for the distribution chart (optional).
        overlays: how many validation cases get an overlay.
    """

    def __init__(
        self,
        output_dir: os.PathLike | str,
        evaluator: Engine | None = None,
        class_names: Sequence[str] = (),
        class_volumes: Sequence[int] | None = None,
        overlays: int = 3,
    ) -> None:
        self.folder = Path(output_dir) / "reports"
        self.evaluator = evaluator
        self.class_names = list(class_names)
        self.class_volumes = class_volumes
        self.overlays = overlays
        self.rows_by_epoch: dict[int, dict] = {}
        self._earlier_rows: list[dict] | None = None
        self._epoch_losses: list[float] = []
        self.trainer: Engine | None = None

    def attach(self, engine: Engine) -> None:
        self.trainer = engine
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record_loss)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.end_epoch)
        engine.add_event_handler(Events.COMPLETED, self.write)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.ITERATION_COMPLETED, self.capture_overlays)
            self.evaluator.add_event_handler(Events.COMPLETED, self.record_validation)

    def start(self, engine: Engine) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._earlier_rows = _read_metrics_rows(self.folder / "metrics.csv")
        config = executed_config()
        if config is not None:
            write_text_atomically(self.folder / "executed_config.yaml", yaml.safe_dump(config, sort_keys=False))
        if self.class_volumes is not None and self.class_names:
            save_class_distribution(self.class_volumes, self.class_names, self.folder / "class_distribution.png")

    def record_loss(self, engine: Engine) -> None:
        self._epoch_losses.append(iteration_loss(engine.state.output))

    def end_epoch(self, engine: Engine) -> None:
        if self._earlier_rows:  # the trainer's epoch is known only now (a checkpoint loads after STARTED)
            kept = [row for row in self._earlier_rows if row["epoch"] < engine.state.epoch]
            self.rows_by_epoch = {row["epoch"]: row for row in kept} | self.rows_by_epoch
        self._earlier_rows = None
        row = self.rows_by_epoch.setdefault(engine.state.epoch, {"epoch": engine.state.epoch})
        row["train_loss"] = float(np.mean(self._epoch_losses or [float("nan")]))
        self._epoch_losses = []
        self.write_table()

    def record_validation(self, evaluator: Engine) -> None:
        epoch = self.trainer.state.epoch if self.trainer is not None else 0
        row = self.rows_by_epoch.setdefault(epoch, {"epoch": epoch})
        row.update({k: float(v) for k, v in evaluator.state.metrics.items() if isinstance(v, (int, float))})
        self.write(evaluator)

    def capture_overlays(self, evaluator: Engine) -> None:
        """Overlays of the cases of this validation iteration that are among the first ``overlays``."""
        output = evaluator.state.output  # decollated by MONAI: a list of per-case dicts
        cases = output if isinstance(output, list) else [output]
        first_index = (evaluator.state.iteration - 1) * len(cases)
        if first_index >= self.overlays:
            return
        epoch = self.trainer.state.epoch if self.trainer is not None else 0
        self.folder.mkdir(parents=True, exist_ok=True)
        for number, case in enumerate(cases[: self.overlays - first_index], start=first_index + 1):
            prediction = case["pred"]
            prediction = prediction.argmax(0) if prediction.shape[0] > 1 else prediction[0]
            save_overlay(
                _numpy(case["image"][0]),
                _numpy(case["label"][0]),
                _numpy(prediction),
                self.folder / f"overlay_validation_case{number}.png",
                title=f"validation case {number}, epoch {epoch}",
            )

    def _rows(self) -> list[dict]:
        return [self.rows_by_epoch[epoch] for epoch in sorted(self.rows_by_epoch)]

    def write_table(self) -> None:
        """``metrics.csv``: one row per epoch so far (nothing when no epoch has run)."""
        rows = self._rows()
        if not rows:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = sorted({key for row in rows for key in row}, key=lambda k: (k != "epoch", k != "train_loss", k))
        write_csv_atomically(self.folder / "metrics.csv", rows, keys)

    def write(self, engine: Engine | None = None) -> None:
        """``metrics.csv`` and ``training_curves.png`` (nothing when no epoch has run)."""
        rows = self._rows()
        if not rows:
            return
        self.write_table()
        figure, axis = pyplot().subplots(figsize=(6, 3.5))
        losses = [(row["epoch"], row["train_loss"]) for row in rows if "train_loss" in row]
        if losses:
            axis.plot(*zip(*losses), label="train loss")
        for key in sorted({key for row in rows for key in row if key.startswith("val_")}):
            points = [(row["epoch"], row[key]) for row in rows if key in row]
            axis.plot(*zip(*points), marker="o", label=key)
        axis.set_xlabel("epoch")
        axis.legend(fontsize=7)
        save_figure(figure, self.folder / "training_curves.png")

    def files(self) -> list[str]:
        """The report files written so far (for the tracker's artifacts)."""
        return [str(path) for path in sorted(self.folder.glob("*")) if path.is_file()]


def _read_metrics_rows(path: Path) -> list[dict]:
    """The rows of an earlier ``metrics.csv`` (numbers as floats, ``epoch`` as int), or [] without one."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    parsed = []
    for row in rows:
        try:
            values = {key: float(value) for key, value in row.items() if value not in ("", None)}
            parsed.append({**values, "epoch": int(values["epoch"])})
        except (KeyError, ValueError):
            continue
    return parsed


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)


class EvaluationReport:
    """Write ``per_case_dice.csv`` (one row per case, one column per foreground class) and
    ``summary.json`` (per class: mean, median, std and count of the cases where the class is scored,
    by :func:`gdlseg.evaluation.report.summarize`; and ``mean_dice``) when the evaluator ends.

    Args:
        output_dir: the folder for both files.
        metric: the evaluator's :class:`gdlseg.engines.metrics.PerClassDice`.
    """

    def __init__(self, output_dir: os.PathLike | str, metric) -> None:
        self.folder = Path(output_dir)
        self.metric = metric

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self.write)

    def write(self, engine: Engine) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        class_names = self.metric.class_names[1:]
        rows = self.metric.case_scores
        write_csv_atomically(self.folder / "per_case_dice.csv", rows, ["case", *class_names])
        summary: dict = {name: summarize(row[name] for row in rows) for name in class_names}
        mean_dice = self.metric.compute()
        summary["mean_dice"] = mean_dice if np.isfinite(mean_dice) else None
        write_json_atomically(self.folder / "summary.json", summary)
