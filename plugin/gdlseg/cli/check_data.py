"""``gdlseg check-data``: check a labelled dataset the way training will, and list every problem.

Reads every case of the datalist's "training" and "validation" lists as the training pipeline
does and reports, all at once: missing, unreadable, truncated or corrupt files; DICOM folders with
several series or irregular slices; images that are not 3D (or 4D, channels last) or have a
zero-size dimension; channel files off channel 0's grid (size, spacing, origin, direction: the
channel is named by index and by the datalist's channel_names or modality); a channel count other
than the datalist's channel names or the first case's; image and label of different shapes or
affines (beyond --affine-tolerance mm); NaN or infinite intensities; label values that are
negative, not integers, or >= the number of classes; class settings that disagree (--classes vs
--num-classes, --class-weights); and an --intensity list whose length is not the channel count.
Training runs the same check before its first epoch (bundle setting check_data).

Each problem is one line on stdout, "<case>: <file or setting>: <what is wrong>", with case and file
names only (no folders).

Exit codes: 0 no problem; 1 problems found (listed); 2 usage error.

Example:
  gdlseg check-data data/Task01 --classes background liver tumour
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gdlseg.cli.common import EXIT_OK, EXIT_SOME_FAILED, UsageError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "check-data",
        help="check every labelled case of a dataset (files, geometry, labels, intensities) and list all problems",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", type=Path, metavar="DATASET", help="dataset folder (holds dataset.json)")
    parser.add_argument("--datalist", type=Path, metavar="JSON", help="datalist (default: DATASET/dataset.json)")
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument("--classes", nargs="+", metavar="NAME", help="class names, background first")
    classes.add_argument("--num-classes", type=int, metavar="N", help="number of classes, background included")
    parser.add_argument(
        "--class-weights", nargs="+", metavar="W", help="'auto' or one weight per class, checked like training does"
    )
    parser.add_argument(
        "--intensity", nargs="+", choices=("ct", "mr"), metavar="PRESET",
        help="the intensity preset (ct or mr), or one per channel, checked against the channel count",
    )  # fmt: skip
    parser.add_argument(
        "--affine-tolerance", type=float, default=None, metavar="MM", help="largest image/label affine difference"
    )
    parser.set_defaults(handler=run, command="check-data")
    return parser


def datalist_of(args: argparse.Namespace) -> Path:
    """--datalist, or DATASET/dataset.json; usage errors for a missing folder."""
    if not args.dataset.is_dir():
        raise UsageError(f"DATASET {args.dataset}: not a folder")
    return args.datalist if args.datalist is not None else args.dataset / "dataset.json"


def _class_weights(values: list[str] | None) -> str | list[float] | None:
    if values is None or values == ["auto"]:
        return None if values is None else "auto"
    try:
        return [float(value) for value in values]
    except ValueError:
        raise UsageError(f"--class-weights expects 'auto' or numbers, got {' '.join(values)}") from None


def run(args: argparse.Namespace) -> int:
    from gdlseg.data.checks import AFFINE_TOLERANCE, ChannelSettings, check_dataset, labelled_cases
    from gdlseg.data.datalist import datalist_class_count

    datalist = datalist_of(args)
    num_classes = args.num_classes or (len(args.classes) if args.classes else datalist_class_count(datalist))
    if num_classes is None:
        raise UsageError("the number of classes is unknown: pass --classes or --num-classes (no 'labels' in datalist)")
    tolerance = AFFINE_TOLERANCE if args.affine_tolerance is None else args.affine_tolerance
    if tolerance < 0:
        raise UsageError(f"--affine-tolerance must be >= 0, got {tolerance}")
    weights = _class_weights(args.class_weights)
    channels = ChannelSettings(
        intensity=args.intensity[0] if args.intensity and len(args.intensity) == 1 else args.intensity
    )
    problems = check_dataset(
        datalist, args.dataset, num_classes, args.classes, weights, tolerance, progress=True, channels=channels
    )
    for problem in problems:
        print(problem)
    cases = len(labelled_cases(datalist, args.dataset)[0])
    if problems:
        affected = len({problem.case for problem in problems})
        print(f"gdlseg check-data: {len(problems)} problem(s) in {affected} case(s) or setting(s)", file=sys.stderr)
        return EXIT_SOME_FAILED
    print(f"gdlseg check-data: {cases} labelled case(s) checked, no problem found", file=sys.stderr)
    return EXIT_OK
