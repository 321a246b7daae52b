"""Out-of-fold evaluation of a cross-validation: each case segmented by the one fold's model that did
not train on it, scored against its label, summarised per class, logged to the parent MLflow run.

A cross-validation folder ``OUTPUT`` (``gdlseg train --folds K``) holds ``splits.json``,
``crossval.json`` (the parent run) and ``fold_<i>/models/model.pt``. :func:`out_of_fold_evaluation`
writes, under ``OUTPUT/crossval``:

- ``predictions/<case>_seg.nii.gz`` and ``<case>_seg.json``: every training case exactly once, by the
  model of the fold that validated it (:func:`gdlseg.inference.segment_cases`, default windows);
- ``metrics.csv``, ``summary.json``, ``plots/``, ``overlays/``: :func:`gdlseg.evaluation.batch.evaluate_cases`
  on those predictions, so per class and metric the mean, median, sd (ddof = 0), the percentile
  bootstrap 95 % interval of the mean (``ci95``) and the number of cases; ``summary.json`` adds a
  ``cross_validation`` block: folds, seed, group key, each fold's case count and mean Dice, and the
  cases that could not be segmented;
- ``OUTPUT/postprocessing.json`` (beside the folds, where ``gdlseg infer --ckpt OUTPUT`` finds it): the
  per-class post-processing that raised the out-of-fold Dice without losing a reference lesion, with the
  evidence for every candidate (:mod:`gdlseg.inference.postprocessing`); its rules are also in the summary.

Pooling the out-of-fold cases (rather than averaging the K fold means) gives every case the same
weight whatever the size of its fold, as nnU-Net's cross-validation summary does.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gdlseg.data.atomic import write_json_atomically
from gdlseg.data.datalist import read_datalist, resolve_case
from gdlseg.data.splits import (
    SPLITS_FILE,
    check_splits,
    datalist_case_names,
    datalist_groups,
    fold_finished,
    fold_folder,
    read_splits,
)
from gdlseg.evaluation.batch import evaluate_cases
from gdlseg.evaluation.bootstrap import CONFIDENCE, RESAMPLES, SEED
from gdlseg.evaluation.report import finite_or_none
from gdlseg.evaluation.statistics import mean_of_class_means
from gdlseg.evaluation.summary_metrics import metric_key, run_metrics
from gdlseg.inference import InferenceOptions, SlidingWindowSettings, load_trained_model, output_paths, segment_cases
from gdlseg.inference.postprocessing import FILE_NAME, choose_postprocessing, smallest_component_mm3
from gdlseg.tracking.crossval import log_cross_validation_summary

CROSSVAL_FOLDER = "crossval"
FOLD_MODEL = Path("models") / "model.pt"


@dataclass
class CrossValidationOutcome:
    """What :func:`out_of_fold_evaluation` did.

    Attributes:
        summary: the content of ``summary.json``.
        failures: ``{case: reason}`` of the cases that could not be segmented or evaluated.
        parent_run_id: the parent MLflow run the summary went to, or None.
    """

    summary: dict
    failures: dict[str, str]
    parent_run_id: str | None

    @property
    def ok(self) -> bool:
        return not self.failures


def out_of_fold_evaluation(
    output_dir: os.PathLike | str,
    datalist: os.PathLike | str,
    dataset_dir: os.PathLike | str,
    bundle_root: os.PathLike | str,
    device: str | None = None,
    overlays: int = 5,
) -> CrossValidationOutcome:
    """Segment every case with the model of its validation fold, evaluate, and log the summary (module
    docstring).

    Args:
        output_dir: the cross-validation folder.
        datalist, dataset_dir: the datalist the folds were trained on (images and labels).
        bundle_root: the bundle whose network the models are (as for ``gdlseg infer``).
        device: ``"cpu"``, ``"cuda"``…; None: CUDA when available.
        overlays: overlay pictures of that many worst cases.

    Raises:
        ValueError: no ``splits.json``, a split that does not fit the datalist, a fold without a trained
            model (naming the folds), or folds trained with other class names.
    """
    import torch

    output = Path(output_dir)
    splits = read_splits(output)
    cases = [resolve_case(item, dataset_dir) for item in read_datalist(datalist)["training"]]
    names = datalist_case_names(cases)
    groups = datalist_groups(cases, names, splits.get("group_key"))
    check_splits(splits, names, groups, len(splits.get("folds") or []), SPLITS_FILE)
    folds = splits["folds"]
    checkpoints = [Path(fold_folder(output, index)) / FOLD_MODEL for index in range(len(folds))]
    untrained = [str(index) for index, checkpoint in enumerate(checkpoints) if not checkpoint.is_file()]
    if untrained:
        raise ValueError(
            f"fold(s) {', '.join(untrained)} of {len(folds)} have no trained model (fold_<i>/{FOLD_MODEL.as_posix()}): "
            "train them first (gdlseg train --fold I, or --folds K --resume)."
        )
    # a model of another split may have trained on the cases it would be asked to predict here
    unfinished = [str(index) for index in range(len(folds)) if not fold_finished(output, index)]
    if unfinished:
        raise ValueError(
            f"fold(s) {', '.join(unfinished)} of {len(folds)} did not finish training on this splits.json (no "
            "fold_<i>/finished.json of it): train them with gdlseg train --folds K --resume (or --fold I)."
        )
    (output / FILE_NAME).unlink(missing_ok=True)  # an earlier decision is replaced, or gone when none is made
    folder = output / CROSSVAL_FOLDER
    predictions = folder / "predictions"
    shutil.rmtree(predictions, ignore_errors=True)  # predictions of an earlier summary, maybe of other models
    predictions.mkdir(parents=True)
    by_name = dict(zip(names, cases))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    matched: dict[str, tuple[Path, Path]] = {}
    failures: dict[str, str] = {}
    class_names: list[str] | None = None
    for index, (fold, checkpoint) in enumerate(zip(folds, checkpoints)):
        model = load_trained_model(checkpoint, bundle_root, device)
        if class_names is not None and model.class_names != class_names:
            raise ValueError(
                f"fold {index} was trained with the classes {model.class_names}, fold 0 with {class_names}: "
                "every fold must segment the same classes."
            )
        class_names = model.class_names
        options = InferenceOptions(output_dir=predictions, settings=SlidingWindowSettings(model.roi_size))
        inputs = [{"image": by_name[name]["image"], "case": name} for name in fold["val"]]
        for outcome in segment_cases(inputs, model, options):
            if outcome.ok:
                labels = output_paths(predictions, outcome.case, probabilities=False)["labels"]
                matched[outcome.case] = (labels, Path(by_name[outcome.case]["label"]))
            else:
                failures[outcome.case] = outcome.error or "not segmented"
    evaluation = evaluate_cases(
        matched,
        folder,
        class_names=class_names,
        class_names_source="training.json of the folds",
        overlays=overlays,
        unmatched={"references_without_prediction": sorted(failures)},
        tracking_uri="none",  # the summary goes to the cross-validation's parent run instead
    )
    failures.update(evaluation.failures)
    scored = {case: pair for case, pair in matched.items() if case not in failures}
    decision, postprocessing_error = None, None
    try:
        decision = choose_postprocessing_from_files(scored, class_names) if scored else None
    except (ValueError, RuntimeError) as error:  # the summary is kept; only the choice is lost
        postprocessing_error = str(error)
    if decision is not None:
        write_json_atomically(output / FILE_NAME, decision)
    summary = dict(evaluation.summary)
    summary["cross_validation"] = {
        "num_folds": len(folds),
        "seed": splits.get("seed"),
        "group_key": splits.get("group_key"),
        "folds": fold_means(folder / "metrics.csv", folds),
        "not_segmented": [{"case": case, "error": failures[case]} for case in sorted(set(failures) - set(matched))],
        "pooling": "every out-of-fold case once; statistics over cases, not over fold means",
        "bootstrap": {"resamples": RESAMPLES, "seed": SEED, "confidence": CONFIDENCE, "method": "percentile"},
        "postprocessing": None if decision is None else decision["rules"],
        **({"postprocessing_error": postprocessing_error} if postprocessing_error else {}),
    }
    write_json_atomically(folder / "summary.json", finite_or_none(summary))
    artifacts = [
        folder / "summary.json",
        folder / "metrics.csv",
        folder / "plots",
        folder / "overlays",
        output / FILE_NAME,
    ]
    parent = log_cross_validation_summary(output, crossval_metrics(summary), [p for p in artifacts if p.exists()])
    return CrossValidationOutcome(summary=summary, failures=failures, parent_run_id=parent)


def fold_means(metrics_csv: Path, folds: Sequence[Mapping[str, Sequence[str]]]) -> list[dict[str, Any]]:
    """Per fold: its validation case count, ``mean_dice``, the mean over classes of each class's mean
    finite Dice over the fold's cases (the definition of ``summary.json``'s ``mean_dice``), or None, and
    its bootstrap 95 % interval ``mean_dice_ci95`` over the fold's cases."""
    with open(metrics_csv, newline="") as stream:
        rows = list(csv.DictReader(stream))
    result = []
    for index, fold in enumerate(folds):
        mine = set(fold["val"])
        dice: dict[str, dict[str, float]] = {}
        for row in rows:
            if row["case"] in mine:
                dice.setdefault(row["case"], {})[row["class"]] = float(row["dice"])
        mean, interval = mean_of_class_means(dice)
        result.append({"fold": index, "cases": len(mine), "mean_dice": mean, "mean_dice_ci95": interval})
    return result


def crossval_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The parent run's metrics: :func:`gdlseg.evaluation.summary_metrics.run_metrics` (per-class means with
    their 95 % intervals, e.g. ``dice_<class>_ci95_low`` and ``_high``, mean Dice, case counts), each class's
    Dice sd (``dice_<class>_sd``) and each fold's mean Dice (``fold_<i>_mean_dice``)."""
    metrics = run_metrics(summary)
    for name, entry in summary["classes"].items():
        if entry["dice"]["std"] is not None:
            metrics[metric_key(f"dice_{name}_sd")] = entry["dice"]["std"]
    for fold in summary["cross_validation"]["folds"]:
        if fold["mean_dice"] is not None:
            metrics[f"fold_{fold['fold']}_mean_dice"] = fold["mean_dice"]
    return metrics


def choose_postprocessing_from_files(pairs: Mapping[str, tuple[Path, Path]], class_names: Sequence[str]) -> dict:
    """:func:`gdlseg.inference.postprocessing.choose_postprocessing` on label-map files ``{case: (prediction,
    reference)}`` on one grid (as the evaluation checked): the references are read once for their smallest
    components, then each case's pair once."""
    import SimpleITK as sitk

    def read(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
        image = sitk.ReadImage(str(path))
        return sitk.GetArrayFromImage(image), image.GetSpacing()[::-1]  # (z, y, x) and its spacing

    smallest = smallest_component_mm3((read(reference) for _, reference in pairs.values()), range(1, len(class_names)))
    cases = ((read(prediction)[0], *read(reference)) for prediction, reference in pairs.values())
    return choose_postprocessing(cases, class_names, smallest)
