"""Evaluate a batch of cases as ``gdlseg evaluate`` does, callable from a notebook: every case scored,
the report and pictures written, all of it one tracked MLflow run.

A case that cannot be read, is not a label map or lies on another voxel grid is reported by name and
skipped; the others are evaluated. Pair the cases of two folders with
:func:`gdlseg.evaluation.cases.pair_cases`, then call :func:`evaluate_cases`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gdlseg.data.errors import itk_reason
from gdlseg.data.readers import ScanError, read_image
from gdlseg.evaluation.metrics import absent_class_metrics, image_metrics
from gdlseg.evaluation.options import (
    DEFAULT_LESION_SIZE_BINS_ML,
    DEFAULT_NSD_TOLERANCE_MM,
    MetricOptions,
    metric_options,
    size_bins,
)
from gdlseg.evaluation.pictures import write_pictures
from gdlseg.evaluation.report import write_evaluation_report
from gdlseg.evaluation.summary_metrics import run_metrics
from gdlseg.tracking import RunSettings, tracked_run

Results = dict[str, dict[int, dict[str, Any]]]  # {case: {label: {metric: value}}}


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
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    nsd_tolerance_by_class: Mapping[str, float] | None = None,
    lesion_classes: Sequence[str] = (),
    lesion_size_bins_ml: Sequence[float] = DEFAULT_LESION_SIZE_BINS_ML,
) -> EvaluationOutcome:
    """Score ``{case: (prediction, reference)}`` and write the report to ``output``, as one MLflow run.

    Args:
        matched: the pairs to evaluate (:func:`gdlseg.evaluation.cases.pair_cases`).
        output: ``metrics.csv``, ``lesions.csv`` (with ``lesion_classes``), ``summary.json``, ``plots/``,
            ``overlays/`` (and the default MLflow store).
        class_names: every class, background first; None → ``class_<label>`` for the labels found.
        class_names_source: where the names came from (the run's param ``class_names_from``).
        images: folder of the scans ``<case>.<suffix>``, drawn under the overlays.
        overlays: overlay pictures of that many worst cases (0: none).
        unmatched: names of cases without a partner, recorded in ``summary.json``.
        tracking_uri, experiment_name, run_name: the run (see :class:`gdlseg.tracking.RunSettings`);
            ``"none"`` turns tracking off.
        training_run_record: the training's ``mlflow_run.json``; tags the run with its run id.
        nsd_tolerance_mm: the NSD tolerance in mm of every class not in ``nsd_tolerance_by_class``.
        nsd_tolerance_by_class: NSD tolerance in mm per class name.
        lesion_classes: names of the classes scored lesion by lesion (:mod:`gdlseg.evaluation.lesions`).
        lesion_size_bins_ml: edges of the lesion size bins in ml (:func:`gdlseg.evaluation.options.size_bins`).

    Raises:
        ValueError: an unknown class name in ``nsd_tolerance_by_class`` or ``lesion_classes``, a bad
            tolerance or bad bin edges (before anything is written).
    """
    output = Path(output)
    options = metric_options(class_names, nsd_tolerance_mm, nsd_tolerance_by_class, lesion_classes)
    edges = size_bins(lesion_size_bins_ml)
    params: dict[str, Any] = {
        "cases": len(matched),
        "class_names_from": class_names_source or ("class_names" if class_names else "labels found"),
        "nsd_tolerance_mm": options.nsd_tolerance_mm,
    }
    if class_names:
        params["class_names"] = list(class_names)
    if nsd_tolerance_by_class:
        params["nsd_tolerance_by_class"] = dict(nsd_tolerance_by_class)
    if lesion_classes:
        params["lesion_classes"] = list(lesion_classes)
        params["lesion_size_bins_ml"] = list(edges)
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
        results, failures = score_cases(matched, len(class_names) if class_names else None, options)
        names = label_names(results, class_names, options)
        summary = write_evaluation_report(output, results, names, failures, unmatched, options, edges)
        pictures = write_pictures(output, results, names, matched, Path(images) if images else None, overlays)
        tracked.log_metrics(run_metrics(summary))
        tables = [output / name for name in ("metrics.csv", "lesions.csv", "summary.json")]
        tracked.log_artifacts([path for path in tables if path.exists()] + pictures)
        run_id = tracked.run_id
    lists = {key: list(names) for key, names in (unmatched or {}).items()}
    return EvaluationOutcome(summary=summary, failures=failures, run_id=run_id, unmatched=lists)


def score_cases(
    matched: Mapping[str, tuple[Path, Path]], num_classes: int | None, options: MetricOptions | None = None
) -> tuple[Results, dict[str, str]]:
    """Metrics of every case that can be evaluated (with ``options``), and the reason for every one that cannot."""
    from tqdm import tqdm

    results: Results = {}
    failures: dict[str, str] = {}
    progress = tqdm(matched.items(), desc="evaluate", unit="case", file=sys.stderr)
    for case, (prediction_path, reference_path) in progress:
        try:
            prediction = _read(prediction_path, "prediction")
            reference = _read(reference_path, "reference")
            results[case] = image_metrics(prediction, reference, num_classes, options)
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


def label_names(
    results: Results, class_names: Sequence[str] | None, options: MetricOptions | None = None
) -> dict[int, str]:
    """``{label: name}`` of the foreground classes. Without names, every label found in any case (or
    named in ``options``) is a class ``class_<label>``, and a case that lacks one gets the values of a
    class absent from both."""
    if class_names:
        return {label: name for label, name in enumerate(class_names) if label > 0}
    options = options or MetricOptions()
    labels = {label for by_label in results.values() for label in by_label}
    labels |= options.lesion_labels | set(options.nsd_tolerance_by_label)
    highest = max(labels, default=0)
    for by_label in results.values():
        for label in range(1, highest + 1):
            by_label.setdefault(label, absent_class_metrics(lesions=label in options.lesion_labels))
    return {label: f"class_{label}" for label in range(1, highest + 1)}
