"""Prepare TotalSegmentator's public test scans as a small real-CT dataset (Decathlon layout).

    python scripts/prepare_totalseg_reference.py REFERENCE_FILES [--output data/totalseg_ref]

``REFERENCE_FILES`` is the ``tests/reference_files`` folder of a TotalSegmentator checkout
(https://github.com/wasserth/TotalSegmentator, Apache-2.0). Two real abdominal CTs from it, with the
labels TotalSegmentator made for them (tool-made, not expert-drawn), become two cases of 8 structures:

- ``ct_a``: ``example_ct_sm.nii.gz`` (3 mm isotropic, 122 × 101 × 30) with ``example_seg.nii.gz``;
- ``ct_b``: the DICOM series ``example_ct_dicom/`` (0.98 × 0.98 × 2 mm, 512 × 512 × 20; converted to
  NIfTI, geometry only, no DICOM tag copied) with ``example_seg_dicom.nii.gz``.

Classes (TotalSegmentator v2 label values merged): spleen (1), liver (5), stomach (6), pancreas (7),
aorta (52), inferior vena cava (63), autochthon (86, 87: left and right merged so that mirroring
augmentation stays label-preserving), vertebrae (26–50). ``dataset.json`` trains on ``ct_a`` and
validates on ``ct_b`` (two subjects): the "train on one subject, test on another" setting of the
learning benchmark. Nothing is downloaded; the data stay outside the repository (never commit them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

CLASS_NAMES = [
    "background",
    "spleen",
    "liver",
    "stomach",
    "pancreas",
    "aorta",
    "inferior_vena_cava",
    "autochthon",
    "vertebrae",
]
# TotalSegmentator v2 ("total" task) label values of each class above, background excluded.
SOURCE_LABELS: dict[str, list[int]] = {
    "spleen": [1],
    "liver": [5],
    "stomach": [6],
    "pancreas": [7],
    "aorta": [52],
    "inferior_vena_cava": [63],
    "autochthon": [86, 87],
    "vertebrae": list(range(26, 51)),
}
CASES = {
    "ct_a": ("example_ct_sm.nii.gz", "example_seg.nii.gz"),
    "ct_b": ("example_ct_dicom", "example_seg_dicom.nii.gz"),
}


def merged_labels(source: np.ndarray) -> np.ndarray:
    """TotalSegmentator's label map → this dataset's 9 classes (uint8; other structures → background)."""
    merged = np.zeros(source.shape, dtype=np.uint8)
    for index, name in enumerate(CLASS_NAMES[1:], start=1):
        merged[np.isin(source, SOURCE_LABELS[name])] = index
    return merged


def dicom_to_nifti(folder: Path, destination: Path) -> None:
    """The series as a NIfTI file with its geometry; no DICOM tag is carried over."""
    import SimpleITK as sitk

    from gdlseg.data.readers import read_image, without_metadata

    sitk.WriteImage(without_metadata(read_image(folder)), str(destination))


def prepare(reference_files: Path, output: Path) -> Path:
    """Write ``output``'s images, labels and ``dataset.json``; returns the dataset.json path.

    Raises:
        FileNotFoundError: a source file is missing, naming it.
    """
    for image_name, label_name in CASES.values():
        for name in (image_name, label_name):
            if not (reference_files / name).exists():
                raise FileNotFoundError(
                    f"{reference_files / name} is missing: pass TotalSegmentator's tests/reference_files."
                )
    (output / "imagesTr").mkdir(parents=True, exist_ok=True)
    (output / "labelsTr").mkdir(parents=True, exist_ok=True)
    for case, (image_name, label_name) in CASES.items():
        image_path = output / "imagesTr" / f"{case}.nii.gz"
        source_image = reference_files / image_name
        if source_image.is_dir():
            dicom_to_nifti(source_image, image_path)
        # Both in RAS voxel order: the DICOM series and its label map store the same grid in mirrored
        # row orders, which nibabel's canonical reorientation (a permutation/flip, no resampling) removes.
        image = nib.as_closest_canonical(nib.load(image_path if source_image.is_dir() else source_image))
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj).astype(np.int16), image.affine), image_path)
        labels = nib.as_closest_canonical(nib.load(reference_files / label_name))
        merged = merged_labels(np.asanyarray(labels.dataobj))
        if merged.shape != image.shape or not np.allclose(labels.affine, image.affine, atol=1e-2):
            raise ValueError(
                f"{case}: the labels' grid differs from the image's; not TotalSegmentator's reference files?"
            )
        nib.save(nib.Nifti1Image(merged, image.affine), output / "labelsTr" / f"{case}.nii.gz")
    entry = {case: {"image": f"imagesTr/{case}.nii.gz", "label": f"labelsTr/{case}.nii.gz"} for case in CASES}
    dataset = {
        "name": "TotalSegmentator reference CTs",
        "description": "Two real abdominal CTs with TotalSegmentator labels, 8 structures (tool-made labels).",
        "licence": "Apache-2.0 (TotalSegmentator repository, tests/reference_files)",
        "modality": {"0": "CT"},
        "labels": {str(index): name for index, name in enumerate(CLASS_NAMES)},
        "training": [entry["ct_a"]],
        "validation": [entry["ct_b"]],
    }
    path = output / "dataset.json"
    path.write_text(json.dumps(dataset, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference_files", type=Path, help="TotalSegmentator's tests/reference_files folder")
    parser.add_argument("--output", type=Path, default=Path("data/totalseg_ref"))
    args = parser.parse_args(argv)
    try:
        path = prepare(args.reference_files, args.output)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"prepare_totalseg_reference: {error}")
    for case in CASES:
        counts = np.bincount(
            np.asarray(nib.load(args.output / "labelsTr" / f"{case}.nii.gz").dataobj).ravel(), minlength=9
        )
        print(case, {name: int(count) for name, count in zip(CLASS_NAMES, counts)})
    print(f"dataset written: {path}")


if __name__ == "__main__":
    main()
