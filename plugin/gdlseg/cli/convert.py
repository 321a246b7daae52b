"""``gdlseg convert``: a DICOM series (or any scan SimpleITK reads) to NIfTI.

INPUT is a folder holding a DICOM series, or an image file (a DICOM file, NRRD, MetaImage, NIfTI).
OUTPUT is a new .nii.gz (or .nii, .nrrd, .mha) file. Voxels and geometry (spacing, origin,
direction) are kept; no metadata is carried over, so no DICOM tag (patient tags included) reaches
the output. The file is written atomically and never over an input; an existing OUTPUT is kept
unless --overwrite.

A folder with several series is refused with the list of them: choose one with --series-uid. A
series with a missing slice, uneven slice spacing, duplicate positions or a gantry tilt is refused
(ITK would stack its slices as a regular grid and the geometry would be wrong); --allow-irregular
converts it anyway with a warning.

Exit codes: 0 written; 1 the input cannot be read or converted (nothing written); 2 usage error.

Example:
  gdlseg convert dicom/CT_0001 nifti/CT_0001.nii.gz
  gdlseg convert dicom/study --series-uid 1.2.840.113619.2.55.3.1234 study_ct.nii.gz
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from gdlseg.cli.common import EXIT_OK, UsageError

OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert a DICOM series (or an NRRD/MetaImage/DICOM file) to NIfTI, without any DICOM tag",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="DICOM series folder or image file")
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="output file: .nii.gz, .nii, .nrrd or .mha")
    parser.add_argument("--series-uid", metavar="UID", help="the series to convert from a folder holding several")
    parser.add_argument(
        "--allow-irregular",
        action="store_true",
        help="convert a series with missing slices, uneven spacing or gantry tilt anyway (geometry approximate)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    parser.set_defaults(handler=run, command="convert")
    return parser


def _check_paths(source: Path, output: Path, overwrite: bool) -> None:
    if not source.exists():
        raise UsageError(f"INPUT {source} does not exist")
    if not output.name.lower().endswith(OUTPUT_SUFFIXES):
        raise UsageError(f"OUTPUT {output} must end with one of {', '.join(OUTPUT_SUFFIXES)}")
    resolved_source, resolved_output = source.resolve(), output.resolve()
    if resolved_output == resolved_source or resolved_source in resolved_output.parents:
        raise UsageError(f"OUTPUT {output} would be written into the input {source}: inputs are never modified")
    if output.is_dir():
        raise UsageError(f"OUTPUT {output} is a folder; give a file name")
    if output.exists() and not overwrite:
        raise UsageError(f"OUTPUT {output} exists; pass --overwrite to replace it")


def run(args: argparse.Namespace) -> int:
    from gdlseg.data.atomic import write_image_atomically
    from gdlseg.data.readers import read_image, without_metadata

    _check_paths(args.input, args.output, args.overwrite)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        image = read_image(args.input, series_uid=args.series_uid, allow_irregular=args.allow_irregular)
    for warning in caught:
        print(f"gdlseg convert: warning: {warning.message}", file=sys.stderr)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_image_atomically(without_metadata(image), args.output)
    size = "x".join(str(n) for n in image.GetSize())
    spacing = "x".join(f"{v:.4g}" for v in image.GetSpacing())
    print(
        f"gdlseg convert: wrote {args.output} ({size} voxels of {spacing} mm, {image.GetPixelIDTypeAsString()})",
        file=sys.stderr,
    )
    return EXIT_OK
