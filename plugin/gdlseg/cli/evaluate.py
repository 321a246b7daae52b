"""``gdlseg evaluate``: score predicted label maps against reference label maps.

Predictions ``<case>_seg.<suffix>`` in --pred are paired by case name with references ``<case>.<suffix>``
in --ref (NIfTI, NRRD, MetaImage). For every case and foreground class: Dice, 95th-percentile Hausdorff
distance and mean surface distance in mm (with the voxel spacing), and both volumes in ml. Written to
OUTPUT: metrics.csv (one row per case and class), summary.json (per class mean, median, std and the
number of cases behind them), plots/box_<metric>.png, overlays/<case>.png for the worst cases.

Edge cases: a class absent from both maps has Dice, HD95 and MSD NaN (left out of the statistics); a
class absent from exactly one has Dice 0 and HD95/MSD inf (left out of the distance statistics, counted
as empty_in_one). A case that cannot be read, is not a label map or lies on another voxel grid is
reported by name and skipped; the others are evaluated.

Tracking: each evaluation is an MLflow run (job "evaluate") with the per-class means, the files above
as artifacts and, with --training-run-record, the tag gdlseg.training_run_id. Store: --tracking-uri,
else $MLFLOW_TRACKING_URI, else the store of the training named by --training-run-record, else SQLite
in OUTPUT/mlflow. --no-tracking turns it off.

Exit codes: 0 all cases evaluated; 1 some cases failed or references have no prediction; 2 usage error.

Example:
  gdlseg evaluate --pred run1/predictions --ref data/labelsTs --output run1/evaluation \
      --training-run-record run1/models/mlflow_run.json --images data/imagesTs
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from gdlseg.cli.common import EXIT_OK, EXIT_SOME_FAILED, UsageError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted label maps against references: Dice, HD95, MSD (mm), volumes (ml), report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--pred", required=True, type=Path, metavar="DIR", help="folder of predictions <case>_seg.nii.gz"
    )
    parser.add_argument(
        "--ref", required=True, type=Path, metavar="DIR", help="folder of reference label maps <case>.nii.gz"
    )
    parser.add_argument(
        "--output", required=True, type=Path, metavar="DIR", help="folder for the report (and the default MLflow store)"
    )
    parser.add_argument(
        "--images", type=Path, metavar="DIR", help="folder of the scans <case>.nii.gz, drawn under the overlays"
    )
    parser.add_argument(
        "--classes", nargs="+", metavar="NAME", help="class names, background first (default: from the training record)"
    )
    parser.add_argument(
        "--training-record", type=Path, metavar="JSON", help="training.json of the model, for the class names"
    )
    parser.add_argument(
        "--training-run-record",
        type=Path,
        metavar="JSON",
        help="the training's mlflow_run.json: tags the evaluation run (training.json beside it names the classes)",
    )
    parser.add_argument(
        "--overlays",
        type=int,
        default=5,
        metavar="N",
        help="overlay pictures of the N worst cases (default 5; 0: none)",
    )
    tracking = parser.add_mutually_exclusive_group()
    tracking.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: see above)")
    tracking.add_argument("--no-tracking", action="store_true", help="do not record an MLflow run")
    parser.add_argument("--experiment", metavar="NAME", help="MLflow experiment (default: the training's, else gdlseg)")
    parser.add_argument("--run-name", metavar="NAME", help="MLflow run name (default: a unique generated name)")
    parser.set_defaults(handler=run, command="evaluate")
    return parser


def run(args: argparse.Namespace) -> int:
    from gdlseg.evaluation.cases import pair_cases
    from gdlseg.evaluation.report import write_evaluation_report

    if args.overlays < 0:
        raise UsageError(f"--overlays must be 0 or more, got {args.overlays}")
    for option, folder in (("--pred", args.pred), ("--ref", args.ref), ("--images", args.images)):
        if folder is not None and not folder.is_dir():
            raise UsageError(f"{option} {folder}: not a folder")
    run_record = _read_json(args.training_run_record, "--training-run-record") if args.training_run_record else {}
    class_names, names_source = _class_names(args)
    try:
        pairs = pair_cases(args.pred, args.ref)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if not pairs.matched:
        raise UsageError(
            f"no prediction in --pred pairs with a reference in --ref ({len(pairs.predictions_without_reference)} "
            f"predictions, {len(pairs.references_without_prediction)} references; predictions are "
            "<case>_seg.nii.gz, references <case>.nii.gz)"
        )
    unmatched = {
        "references_without_prediction": pairs.references_without_prediction,
        "predictions_without_reference": pairs.predictions_without_reference,
    }
    _report_unmatched(unmatched)

    from gdlseg.engines.tracking import derived_run_tracking_uri, tracked_run

    params: dict[str, Any] = {"cases": len(pairs.matched), "class_names_from": names_source}
    if class_names:
        params["class_names"] = class_names
    args.output.mkdir(parents=True, exist_ok=True)
    with tracked_run(
        args.output,
        job="evaluate",
        tracking_uri=derived_run_tracking_uri(args.tracking_uri, args.no_tracking, run_record),
        experiment_name=args.experiment or run_record.get("experiment") or "gdlseg",
        run_name=args.run_name,
        params=params,
        source_run_record=args.training_run_record,
    ) as tracked:
        results, failures = _evaluate_cases(pairs.matched, len(class_names) if class_names else None)
        names = _label_names(results, class_names)
        summary = write_evaluation_report(args.output, results, names, failures, unmatched)
        pictures = _write_pictures(args, results, names, pairs.matched)
        tracked.log_metrics(_run_metrics(summary))
        tracked.log_artifacts([args.output / "metrics.csv", args.output / "summary.json", *pictures])
        run_id = tracked.run_id
    _print_summary(summary, args.output, run_id)
    failed = bool(failures or pairs.references_without_prediction)
    return EXIT_SOME_FAILED if failed else EXIT_OK


# -- options ------------------------------------------------------------------------------------
def _read_json(path: Path, option: str) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"{option} {path}: cannot be read as JSON ({error})") from None
    if not isinstance(content, dict):
        raise UsageError(f"{option} {path}: expected a JSON object")
    return content


def _class_names(args: argparse.Namespace) -> tuple[list[str] | None, str]:
    """Names of every class, background first, and where they came from: --classes, --training-record,
    training.json beside --training-run-record, or None (``class_<label>`` for the labels found)."""
    if args.classes:
        if len(args.classes) < 2:
            raise UsageError(f"--classes needs background and at least one class, got {args.classes}")
        if len(set(args.classes)) != len(args.classes):
            raise UsageError(f"--classes names must differ, got {args.classes}")
        return list(args.classes), "--classes"
    record, option = args.training_record, "--training-record"
    if record is None and args.training_run_record is not None:
        beside = args.training_run_record.parent / "training.json"
        record, option = (beside, "training.json beside --training-run-record") if beside.is_file() else (None, "")
    if record is None:
        return None, "labels found"
    names = _read_json(record, option).get("class_names")
    if not isinstance(names, list) or len(names) < 2:
        raise UsageError(f"{option} {record}: no class_names list with background and at least one class")
    return [str(name) for name in names], "training.json"


# -- the work -----------------------------------------------------------------------------------
def _evaluate_cases(
    matched: dict[str, tuple[Path, Path]], num_classes: int | None
) -> tuple[dict[str, dict[int, dict[str, float]]], dict[str, str]]:
    """Metrics of every case that can be evaluated, and the reason for every one that cannot."""
    from tqdm import tqdm

    from gdlseg.evaluation.metrics import image_metrics

    results: dict[str, dict[int, dict[str, float]]] = {}
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
    from gdlseg.data.errors import itk_reason
    from gdlseg.data.readers import ScanError, read_image

    try:
        return read_image(path)
    except ScanError as error:
        reason = error.reason
    except RuntimeError as error:
        reason = itk_reason(error, path)
    raise ValueError(f"cannot read the {role} {path.name}: {reason}")


def _label_names(results: dict[str, dict[int, dict[str, float]]], class_names: list[str] | None) -> dict[int, str]:
    """``{label: name}`` of the foreground classes. Without names, every label found in any case is a
    class ``class_<label>``, and a case that lacks one gets the values of a class absent from both."""
    from gdlseg.evaluation.metrics import absent_class_metrics

    if class_names:
        return {label: name for label, name in enumerate(class_names) if label > 0}
    labels = sorted({label for by_label in results.values() for label in by_label})
    highest = labels[-1] if labels else 0
    for by_label in results.values():
        for label in range(1, highest + 1):
            by_label.setdefault(label, absent_class_metrics())
    return {label: f"class_{label}" for label in range(1, highest + 1)}


def _write_pictures(
    args: argparse.Namespace,
    results: dict[str, dict[int, dict[str, float]]],
    names: dict[int, str],
    matched: dict[str, tuple[Path, Path]],
) -> list[Path]:
    """Box plots per metric and overlays of the ``--overlays`` worst cases; returns the folders written."""
    from gdlseg.evaluation.plots import save_box_plots

    plots = args.output / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for metric, label in (("dice", "Dice"), ("hd95_mm", "HD95 (mm)"), ("msd_mm", "mean surface distance (mm)")):
        values = {names[k]: [by_label[k][metric] for by_label in results.values()] for k in names}
        save_box_plots(values, plots / f"box_{metric}.png", label, f"{label} per class")
    folders = [plots]
    if args.overlays:
        folders.append(_write_overlays(args, results, matched))
    return folders


def _write_overlays(
    args: argparse.Namespace, results: dict[str, dict[int, dict[str, float]]], matched: dict[str, tuple[Path, Path]]
) -> Path:
    """``overlays/<case>.png`` for the cases with the lowest mean Dice, on the slice where prediction and
    reference disagree most (on the scan from --images when it lies on the reference's grid, else on
    the reference itself). Overlays of an earlier evaluation in the folder are removed."""
    import numpy as np
    import SimpleITK as sitk

    from gdlseg.data.readers import read_image
    from gdlseg.evaluation.cases import index_folder
    from gdlseg.evaluation.geometry import geometry_differences
    from gdlseg.evaluation.plots import save_overlay

    folder = args.output / "overlays"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    images = index_folder(args.images, series_folders=True) if args.images else {}
    ranked = sorted(
        (dice, case)
        for case, by_label in results.items()
        if not math.isnan(dice := _nanmean([values["dice"] for values in by_label.values()]))
    )
    for dice, case in ranked[: args.overlays]:
        prediction_path, reference_path = matched[case]
        reference = read_image(reference_path)
        prediction = sitk.GetArrayFromImage(read_image(prediction_path))
        labels = sitk.GetArrayFromImage(reference)
        background = (labels > 0).astype(np.float32)
        if case in images:
            try:
                scan = read_image(images[case])
                if not geometry_differences(scan, reference) and scan.GetNumberOfComponentsPerPixel() == 1:
                    background = sitk.GetArrayFromImage(scan).astype(np.float32)
                else:
                    print(
                        f"gdlseg evaluate: case {case}: the scan is not on the reference's grid; "
                        "overlay drawn on the reference",
                        file=sys.stderr,
                    )
            except (RuntimeError, ValueError):  # a ScanError is a ValueError
                print(
                    f"gdlseg evaluate: case {case}: the scan cannot be read; overlay drawn on the reference",
                    file=sys.stderr,
                )
        # SimpleITK arrays are (z, y, x); the plots take (x, y, z).
        background, labels, prediction = (array.T for array in (background, labels, prediction))
        if labels.ndim == 3:
            disagreement = (labels != prediction).sum(axis=(0, 1))
            axial = int(np.argmax(disagreement)) if disagreement.any() else None
        else:
            axial = None
        title = f"{case}: mean Dice {dice:.3f}"
        save_overlay(background, labels, prediction, folder / f"{case}.png", axial, title, reference.GetSpacing())
    return folder


def _nanmean(values: list[float]) -> float:
    finite = [value for value in values if not math.isnan(value)]
    return sum(finite) / len(finite) if finite else float("nan")


# -- output -------------------------------------------------------------------------------------
def _metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . /`` and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def _run_metrics(summary: dict) -> dict[str, float]:
    """Per-class means of Dice, HD95, MSD and volumes, the mean Dice over classes, and case counts."""
    metrics: dict[str, float] = {
        "cases_evaluated": summary["cases"]["evaluated"],
        "cases_failed": summary["cases"]["failed"],
    }
    if summary["mean_dice"] is not None:
        metrics["mean_dice"] = summary["mean_dice"]
    for name, entry in summary["classes"].items():
        for metric in ("dice", "hd95_mm", "msd_mm", "volume_reference_ml", "volume_prediction_ml"):
            if entry[metric]["mean"] is not None:
                metrics[_metric_key(f"{metric}_{name}")] = entry[metric]["mean"]
    return metrics


def _report_unmatched(unmatched: dict[str, list[str]]) -> None:
    for key, text in (
        ("references_without_prediction", "reference(s) without a prediction (counted as failed)"),
        ("predictions_without_reference", "prediction(s) without a reference (not evaluated)"),
    ):
        cases = unmatched[key]
        if cases:
            shown = ", ".join(cases[:20]) + (f" … and {len(cases) - 20} more" if len(cases) > 20 else "")
            print(f"gdlseg evaluate: {len(cases)} {text}: {shown}", file=sys.stderr)


def _print_summary(summary: dict, output: Path, run_id: str | None) -> None:
    def number(entry: dict, key: str = "mean") -> str:
        return "-" if entry[key] is None else f"{entry[key]:.3f}"

    lines = [
        f"{'class':<16} {'cases':>5} {'Dice mean':>9} {'Dice std':>8} {'HD95 mm':>8} {'MSD mm':>7} "
        f"{'empty in one/both':>17}"
    ]
    for name, entry in summary["classes"].items():
        lines.append(
            f"{name[:16]:<16} {entry['dice']['cases']:>5} {number(entry['dice']):>9} {number(entry['dice'], 'std'):>8} "
            f"{number(entry['hd95_mm']):>8} {number(entry['msd_mm']):>7} "
            f"{entry['empty_in_one']:>9}/{entry['empty_in_both']}"
        )
    cases = summary["cases"]
    lines.append(f"{cases['evaluated']} case(s) evaluated, {cases['failed']} failed; report in {output}")
    for failure in summary["failed_cases"]:
        lines.append(f"  failed: {failure['case']}: {failure['error']}")
    if run_id:
        lines.append(f"MLflow run {run_id}")
    print("\n".join(lines))
