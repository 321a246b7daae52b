"""``gdlseg evaluate``: score predicted label maps against reference label maps.

Predictions ``<case>_seg.<suffix>`` in --pred are paired by case name with references ``<case>.<suffix>``
in --ref (NIfTI, NRRD, MetaImage). For every case and foreground class: Dice, 95th-percentile Hausdorff
distance and mean surface distance in mm (with the voxel spacing), normalised surface Dice (NSD) at a
tolerance in mm (--nsd-tolerance, default 2), and both volumes in ml. For the classes named by
--lesion-classes, lesion-level detection: connected components (face connectivity), a reference lesion
detected when a predicted component overlaps it by at least one voxel; true positive, false negative and
false positive lesions, sensitivity, precision, F1 and false positives per scan, overall and per lesion
size bin (--lesion-size-bins, ml). Written to OUTPUT: metrics.csv (one row per case and class),
lesions.csv (one row per lesion, with --lesion-classes), summary.json (per class mean, median, std, the
percentile bootstrap 95% interval of every mean (2000 resamples of the cases, seed 0) and the number of
cases behind them; the lesion section), plots/box_<metric>.png, overlays/<case>.png for the worst cases.
Definitions: docs/evaluation.md.

Edge cases: a class absent from both maps has Dice, HD95, MSD and NSD NaN (left out of the statistics);
a class absent from exactly one has Dice 0, NSD 0 and HD95/MSD inf (left out of the distance
statistics, counted as empty_in_one). A case that cannot be read, is not a label map or lies on another
voxel grid is reported by name and skipped; the others are evaluated.

Tracking: each evaluation is an MLflow run (job "evaluate") with the per-class means and their 95%
intervals, the lesion numbers, the files above as artifacts and, with --training-run-record, the tag
gdlseg.training_run_id. Store: --tracking-uri, else $MLFLOW_TRACKING_URI, else the store of the training
named by --training-run-record, else SQLite in OUTPUT/mlflow. --no-tracking turns it off.

Exit codes: 0 all cases evaluated; 1 some cases failed or references have no prediction; 2 usage error.

Example:
  gdlseg evaluate --pred run1/predictions --ref data/labelsTs --output run1/evaluation \
      --training-run-record run1/models/mlflow_run.json --images data/imagesTs \
      --nsd-tolerance 2 tumour=1 --lesion-classes tumour
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gdlseg.cli.common import EXIT_OK, EXIT_SOME_FAILED, UsageError
from gdlseg.evaluation.options import (
    DEFAULT_LESION_SIZE_BINS_ML,
    DEFAULT_NSD_TOLERANCE_MM,
    check_tolerance,
    metric_options,
    size_bins,
)


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
    parser.add_argument(
        "--nsd-tolerance",
        nargs="+",
        metavar="MM|NAME=MM",
        help="NSD tolerance in mm: one value for every class and/or NAME=MM per class "
        f"(default {DEFAULT_NSD_TOLERANCE_MM:g} for every class not named)",
    )
    parser.add_argument(
        "--lesion-classes", nargs="+", default=[], metavar="NAME", help="classes to score lesion by lesion"
    )
    parser.add_argument(
        "--lesion-size-bins",
        nargs="+",
        type=float,
        metavar="ML",
        help="edges of the lesion size bins in ml (default: "
        + " ".join(map("{:g}".format, DEFAULT_LESION_SIZE_BINS_ML))
        + "; edges e1 < … < ek make the bins [0, e1), [e1, e2), …, [ek, ∞))",
    )
    tracking = parser.add_mutually_exclusive_group()
    tracking.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: see above)")
    tracking.add_argument("--no-tracking", action="store_true", help="do not record an MLflow run")
    parser.add_argument("--experiment", metavar="NAME", help="MLflow experiment (default: the training's, else gdlseg)")
    parser.add_argument("--run-name", metavar="NAME", help="MLflow run name (default: a unique generated name)")
    parser.set_defaults(handler=run, command="evaluate")
    return parser


def run(args: argparse.Namespace) -> int:
    from gdlseg.evaluation.batch import evaluate_cases
    from gdlseg.evaluation.cases import pair_cases
    from gdlseg.tracking import derived_run_tracking_uri

    if args.overlays < 0:
        raise UsageError(f"--overlays must be 0 or more, got {args.overlays}")
    for option, folder in (("--pred", args.pred), ("--ref", args.ref), ("--images", args.images)):
        if folder is not None and not folder.is_dir():
            raise UsageError(f"{option} {folder}: not a folder")
    run_record = _read_json(args.training_run_record, "--training-run-record") if args.training_run_record else {}
    class_names, names_source = _class_names(args)
    settings = _metric_settings(args, class_names)
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
    outcome = evaluate_cases(
        pairs.matched,
        args.output,
        class_names=class_names,
        class_names_source=names_source,
        images=args.images,
        overlays=args.overlays,
        unmatched=unmatched,
        tracking_uri=derived_run_tracking_uri(args.tracking_uri, args.no_tracking, run_record),
        experiment_name=args.experiment or run_record.get("experiment") or "gdlseg",
        run_name=args.run_name,
        training_run_record=args.training_run_record,
        **settings,
    )
    _print_summary(outcome.summary, args.output, outcome.run_id)
    return EXIT_OK if outcome.ok else EXIT_SOME_FAILED


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


def _metric_settings(args: argparse.Namespace, class_names: list[str] | None) -> dict[str, Any]:
    """The NSD and lesion arguments of :func:`gdlseg.evaluation.batch.evaluate_cases`, checked against the
    class names (``class_<label>`` without names)."""
    default, by_class = parse_nsd_tolerance(args.nsd_tolerance or [])
    try:
        metric_options(class_names, default, by_class)
    except ValueError as error:
        raise UsageError(f"--nsd-tolerance: {error}") from None
    try:
        metric_options(class_names, lesion_classes=args.lesion_classes)
    except ValueError as error:
        raise UsageError(f"--lesion-classes: {error}") from None
    if args.lesion_size_bins is not None and not args.lesion_classes:
        raise UsageError("--lesion-size-bins needs --lesion-classes (the classes to bin)")
    try:
        edges = size_bins(DEFAULT_LESION_SIZE_BINS_ML if args.lesion_size_bins is None else args.lesion_size_bins)
    except ValueError as error:
        raise UsageError(f"--lesion-size-bins: {error}") from None
    return {
        "nsd_tolerance_mm": default,
        "nsd_tolerance_by_class": by_class,
        "lesion_classes": list(dict.fromkeys(args.lesion_classes)),
        "lesion_size_bins_ml": edges,
    }


def parse_nsd_tolerance(tokens: list[str]) -> tuple[float, dict[str, float]]:
    """``["2", "tumour=1"]`` → ``(2.0, {"tumour": 1.0})``: at most one bare value (every class not named;
    default :data:`~gdlseg.evaluation.options.DEFAULT_NSD_TOLERANCE_MM`) and NAME=MM pairs, each name once.

    Raises:
        UsageError: a token that is neither, a second bare value, a name given twice, a bad number.
    """
    default: float | None = None
    by_class: dict[str, float] = {}
    for token in tokens:
        name, separator, value = token.rpartition("=")
        try:
            tolerance = check_tolerance(float(value))
        except ValueError as error:
            reason = error if "tolerance" in str(error) else "expected a number of mm or NAME=MM"
            raise UsageError(f"--nsd-tolerance {token}: {reason}") from None
        if not separator:
            if default is not None:
                raise UsageError(f"--nsd-tolerance: two values for every class ({default:g} and {token}); give one")
            default = tolerance
        elif not name:
            raise UsageError(f"--nsd-tolerance {token}: a class name must come before =")
        elif name in by_class:
            raise UsageError(f"--nsd-tolerance: {name} is given twice")
        else:
            by_class[name] = tolerance
    return (DEFAULT_NSD_TOLERANCE_MM if default is None else default), by_class


# -- output -------------------------------------------------------------------------------------
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
        f"{'class':<16} {'cases':>5} {'Dice mean':>9} {'Dice std':>8} {'HD95 mm':>8} {'MSD mm':>7} {'NSD':>6} "
        f"{'empty in one/both':>17}"
    ]
    for name, entry in summary["classes"].items():
        lines.append(
            f"{name[:16]:<16} {entry['dice']['cases']:>5} {number(entry['dice']):>9} {number(entry['dice'], 'std'):>8} "
            f"{number(entry['hd95_mm']):>8} {number(entry['msd_mm']):>7} {number(entry['nsd']):>6} "
            f"{entry['empty_in_one']:>9}/{entry['empty_in_both']}"
        )
    for name, entry in summary["lesions"]["classes"].items():
        lines.append(
            f"{name} lesions: {entry['reference_lesions']} in the references, {entry['tp']} detected "
            f"(sensitivity {number(entry['sensitivity'], 'value')}), {entry['fp']} false positive "
            f"({number(entry['fp_per_scan'])} per scan), precision {number(entry['precision'], 'value')}, "
            f"F1 {number(entry['f1'], 'value')}"
        )
    cases = summary["cases"]
    lines.append(f"{cases['evaluated']} case(s) evaluated, {cases['failed']} failed; report in {output}")
    for failure in summary["failed_cases"]:
        lines.append(f"  failed: {failure['case']}: {failure['error']}")
    if run_id:
        lines.append(f"MLflow run {run_id}")
    print("\n".join(lines))
