"""Evaluate a batch of cases as ``gdlseg evaluate`` does, callable from a notebook: every case scored,
the report and pictures written, all of it one tracked MLflow run.

A case that cannot be read, is not a label map or lies on another voxel grid is reported by name and
skipped; the others are evaluated. Pair the cases of two folders with
:func:`gdlseg.evaluation.cases.pair_cases`, then call :func:`evaluate_cases`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gdlseg.data.errors import itk_reason
from gdlseg.data.readers import ScanError, read_image
from gdlseg.evaluation.metrics import absent_class_metrics, image_metrics
from gdlseg.evaluation.pictures import write_pictures
from gdlseg.evaluation.report import write_evaluation_report
from gdlseg.tracking import RunSettings, tracked_run

Results = dict[str, dict[int, dict[str, float]]]  # {case: {label: {metric: value}}}
SUMMARY_METRICS = ("dice", "hd95_mm", "msd_mm", "volume_reference_ml", "volume_prediction_ml")


@dataclass
class EvaluationOutcome:
    """What :func:`evaluate_cases` did.

    Attributes:
        summary: the content of ``summary.json``.
        failures: ``{case: reason}`` of the cases that could not be evaluated.
        run_id: the MLflow run, or None (tracking off, or the store unreachable).
        unmatched: case names without a partner, as given.
    """

    summary: dict
    failures: dict[str, str]
    run_id: str | None
    unmatched: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every case evaluated and every reference had a prediction."""
        return not self.failures and not self.unmatched.get("references_without_prediction")


def evaluate_cases(
    matched: Mapping[str, tuple[Path, Path]],
    output: os.PathLike | str,
    class_names: Sequence[str] | None = None,
    class_names_source: str | None = None,
    images: os.PathLike | str | None = None,
    overlays: int = 5,
    unmatched: Mapping[str, Sequence[str]] | None = None,
    tracking_uri: str | None = None,
    experiment_name: str = "gdlseg",
    run_name: str | None = None,
    training_run_record: os.PathLike | str | None = None,
) -> EvaluationOutcome:
    """Score ``{case: (prediction, reference)}`` and write the report to ``output``, as one MLflow run.

    Args:
        matched: the pairs to evaluate (:func:`gdlseg.evaluation.cases.pair_cases`).
        output: ``metrics.csv``, ``summary.json``, ``plots/``, ``overlays/`` (and the default MLflow store).
        class_names: every class, background first; None → ``class_<label>`` for the labels found.
        class_names_source: where the names came from (the run's param ``class_names_from``).
        images: folder of the scans ``<case>.<suffix>``, drawn under the overlays.
        overlays: overlay pictures of that many worst cases (0: none).
        unmatched: names of cases without a partner, recorded in ``summary.json``.
        tracking_uri, experiment_name, run_name: the run (see :class:`gdlseg.tracking.RunSettings`);
            ``"none"`` turns tracking off.
        training_run_record: the training's ``mlflow_run.json``; tags the run with its run id.
    """
    output = Path(output)
    params: dict[str, Any] = {
        "cases": len(matched),
        "class_names_from": class_names_source or ("class_names" if class_names else "labels found"),
    }
    if class_names:
        params["class_names"] = list(class_names)
    output.mkdir(parents=True, exist_ok=True)
    settings = RunSettings(
        output,
        job="evaluate",
        tracking_uri=tracking_uri,
        experiment_name=experiment_name,
        run_name=run_name,
        params=params,
        source_run_record=training_run_record,
    )
    with tracked_run(settings) as tracked:
        results, failures = score_cases(matched, len(class_names) if class_names else None)
        names = label_names(results, class_names)
        summary = write_evaluation_report(output, results, names, failures, unmatched)
        pictures = write_pictures(output, results, names, matched, Path(images) if images else None, overlays)
        tracked.log_metrics(run_metrics(summary))
        tracked.log_artifacts([output / "metrics.csv", output / "summary.json", *pictures])
        run_id = tracked.run_id
    lists = {key: list(names) for key, names in (unmatched or {}).items()}
    return EvaluationOutcome(summary=summary, failures=failures, run_id=run_id, unmatched=lists)


def score_cases(matched: Mapping[str, tuple[Path, Path]], num_classes: int | None) -> tuple[Results, dict[str, str]]:
    """Metrics of every case that can be evaluated, and the reason for every one that cannot."""
    from tqdm import tqdm

    results: Results = {}
    failures: dict[str, str] = {}
    progress = tqdm(matched.items(), desc="evaluate", unit="case", file=sys.stderr)
    for case, (prediction_path, reference_path) in progress:
        try:
            prediction = _read(prediction_path, "prediction")
            reference = _read(reference_path, "reference")
            results[case] = image_metrics(prediction, reference, num_classes)
        except (RuntimeError, ValueError, OSError) as error:
            failures[case] = str(error)
            tqdm.write(f"gdlseg evaluate: case {case}: {error}; skipped", file=sys.stderr)
    return results, failures


def _read(path: Path, role: str):
    """Read one image; a failure names the file (not its folder, which may name a patient) and why."""
    try:
        return read_image(path)
    except ScanError as error:
        reason = error.reason
    except RuntimeError as error:
        reason = itk_reason(error, path)
    raise ValueError(f"cannot read the {role} {path.name}: {reason}")


def label_names(results: Results, class_names: Sequence[str] | None) -> dict[int, str]:
    """``{label: name}`` of the foreground classes. Without names, every label found in any case is a
    class ``class_<label>``, and a case that lacks one gets the values of a class absent from both."""
    if class_names:
        return {label: name for label, name in enumerate(class_names) if label > 0}
    labels = sorted({label for by_label in results.values() for label in by_label})
    highest = labels[-1] if labels else 0
    for by_label in results.values():
        for label in range(1, highest + 1):
            by_label.setdefault(label, absent_class_metrics())
    return {label: f"class_{label}" for label in range(1, highest + 1)}


def run_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """Per-class means of Dice, HD95, MSD and volumes, the mean Dice over classes, and case counts."""
    metrics: dict[str, float] = {
        "cases_evaluated": summary["cases"]["evaluated"],
        "cases_failed": summary["cases"]["failed"],
    }
    if summary["mean_dice"] is not None:
        metrics["mean_dice"] = summary["mean_dice"]
    for name, entry in summary["classes"].items():
        for metric in SUMMARY_METRICS:
            if entry[metric]["mean"] is not None:
                metrics[metric_key(f"{metric}_{name}")] = entry[metric]["mean"]
    return metrics


def metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . /`` and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)
