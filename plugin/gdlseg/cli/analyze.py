"""``gdlseg analyze``: the fingerprint of a labelled dataset, and the training settings it suggests.

For every case of the datalist's "training" and "validation" lists: shape and voxel spacing per RAS
axis, foreground intensity statistics, voxels and millilitres of every class. For the dataset:
median/min/max spacing and shape, pooled foreground intensity percentiles, class volumes and
fractions, and suggestions — pixdim (nnU-Net's rule: the median spacing, or for anisotropic data
the 10th percentile of the coarse axis), the shape at that pixdim (to choose roi_size), class
weights (the bundle's 'auto' formula) and the intensity preset (ct when the datalist's modality
is CT, else mr; see gdlseg.data.fingerprint for why no ct_window is derived from the intensities).

Written to OUTPUT (atomically): fingerprint.json (case names only, no paths) and
class_distribution.png. The matching `gdlseg train` options are printed. A case that cannot be
read or fails the dataset check is listed and left out; the others are analysed.

Exit codes: 0 every case analysed; 1 some cases left out (listed) or none readable; 2 usage error.

Example:
  gdlseg analyze data/Task01 --output analysis/Task01
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from gdlseg.cli.check_data import datalist_of
from gdlseg.cli.common import EXIT_OK, EXIT_SOME_FAILED, UsageError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "analyze",
        help="dataset fingerprint: spacings, sizes, intensities, class volumes; suggests pixdim and class weights",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", type=Path, metavar="DATASET", help="dataset folder (holds dataset.json)")
    parser.add_argument("--datalist", type=Path, metavar="JSON", help="datalist (default: DATASET/dataset.json)")
    parser.add_argument(
        "--output", type=Path, default=Path("."), metavar="DIR", help="folder for the report (default: here)"
    )
    parser.add_argument(
        "--classes", nargs="+", metavar="NAME", help="class names, background first (default: the datalist's labels)"
    )
    parser.add_argument(
        "--max-ratio", type=float, default=10.0, help="clip of the suggested class weights (default 10)"
    )
    parser.set_defaults(handler=run, command="analyze")
    return parser


def run(args: argparse.Namespace) -> int:
    from gdlseg.data.atomic import write_json_atomically
    from gdlseg.data.fingerprint import dataset_fingerprint
    from gdlseg.engines.reports import save_class_distribution

    datalist = datalist_of(args)
    if args.max_ratio < 1:
        raise UsageError(f"--max-ratio must be at least 1, got {args.max_ratio}")
    report = args.output / "fingerprint.json"
    if report.resolve() == datalist.resolve():
        raise UsageError(f"--output {args.output}: {report} is the datalist; inputs are never overwritten")
    fingerprint = dataset_fingerprint(datalist, args.dataset, args.classes, args.max_ratio, progress=True)
    args.output.mkdir(parents=True, exist_ok=True)
    write_json_atomically(report, fingerprint)
    save_class_distribution(
        fingerprint["class_voxels"], fingerprint["class_names"], args.output / "class_distribution.png"
    )
    _print_summary(fingerprint, args.output)
    return EXIT_SOME_FAILED if fingerprint["failed_cases"] else EXIT_OK


def _print_summary(fingerprint: dict, output: Path) -> None:
    from gdlseg.data.fingerprint import train_options

    suggested = fingerprint["suggested"]
    lines = [
        f"gdlseg analyze: {fingerprint['cases_analysed']} case(s) analysed; report in {output / 'fingerprint.json'}",
        f"  spacing (mm, R A S): median {fingerprint['spacing_mm']['median']}, "
        f"min {fingerprint['spacing_mm']['min']}, max {fingerprint['spacing_mm']['max']}",
        f"  shape (R A S): median {fingerprint['shape']['median']}",
        f"  suggested pixdim {suggested['pixdim']}: median shape there {suggested['shape_at_pixdim']['median']}",
    ]
    channel_names = fingerprint["channel_names"] or [f"channel {k}" for k in range(fingerprint["in_channels"])]
    for name, stats in zip(channel_names, fingerprint["intensity_foreground_by_channel"]):
        if stats:
            lines.append(
                f"  {name}: foreground intensity 0.5–99.5th percentile "
                f"{stats['percentile_00_5']:.4g} … {stats['percentile_99_5']:.4g}, mean {stats['mean']:.4g}"
            )
    for name, fraction, weight in zip(
        fingerprint["class_names"], fingerprint["class_fraction"], suggested["class_weights"]
    ):
        lines.append(f"  {name:>16}: {100 * fraction:8.4f}% of voxels, suggested weight {weight:g}")
    lines.append("  gdlseg train options: " + shlex.join(train_options(fingerprint)))
    for failed in fingerprint["failed_cases"]:
        lines.append(f"  left out {failed['case']}: " + "; ".join(failed["problems"]))
    print("\n".join(lines), file=sys.stderr)
