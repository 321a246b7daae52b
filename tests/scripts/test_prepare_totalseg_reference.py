"""``scripts/prepare_totalseg_reference.py`` on stand-ins for TotalSegmentator's reference files: a NIfTI CT
and a DICOM series, each with a label map on its own grid (the DICOM one stored with mirrored rows)."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from tests.data.dicom import write_dicom_series

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "prepare_totalseg_reference.py"
# TotalSegmentator label → intensity written into the CT where that structure is, and the merged class.
STRUCTURES = {5: (300, 2), 52: (500, 5), 86: (700, 7), 87: (700, 7), 30: (900, 8), 99: (0, 0)}


def label_volume(shape: tuple[int, int, int]) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    for offset, source in enumerate(STRUCTURES):
        labels[1 + offset * 2 : 3 + offset * 2, 2:6, 1:4] = source
    return labels


def ct_of(labels: np.ndarray) -> np.ndarray:
    ct = np.full(labels.shape, -50, dtype=np.int16)
    for source, (value, _) in STRUCTURES.items():
        ct[labels == source] = value
    return ct


def write_reference_files(folder: Path) -> None:
    folder.mkdir()
    labels_a = label_volume((14, 8, 6))
    affine_a = np.diag([-3.0, -3.0, 3.0, 1.0])  # LPS voxel order: the script reorients to RAS
    nib.save(nib.Nifti1Image(ct_of(labels_a), affine_a), folder / "example_ct_sm.nii.gz")
    nib.save(nib.Nifti1Image(labels_a, affine_a), folder / "example_seg.nii.gz")
    labels_b = label_volume((14, 10, 5)).transpose(2, 1, 0)  # (z, y, x) for SimpleITK
    image = write_dicom_series(folder / "example_ct_dicom", ct_of(labels_b), spacing=(0.9, 0.9, 2.0))
    # the same labels on the same grid, stored with the rows in the opposite order
    mirrored = sitk.GetImageFromArray(labels_b[:, ::-1, :].copy())
    mirrored.SetSpacing(image.GetSpacing())
    mirrored.SetOrigin(image.TransformIndexToPhysicalPoint((0, image.GetSize()[1] - 1, 0)))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    direction[:, 1] *= -1
    mirrored.SetDirection(direction.ravel().tolist())
    sitk.WriteImage(mirrored, str(folder / "example_seg_dicom.nii.gz"))


def test_two_cases_with_merged_classes_each_label_on_its_own_voxels(tmp_path):
    write_reference_files(tmp_path / "reference_files")
    output = tmp_path / "dataset"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "reference_files"), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    dataset = json.loads((output / "dataset.json").read_text())
    assert dataset["training"] == [{"image": "imagesTr/ct_a.nii.gz", "label": "labelsTr/ct_a.nii.gz"}]
    assert dataset["validation"] == [{"image": "imagesTr/ct_b.nii.gz", "label": "labelsTr/ct_b.nii.gz"}]
    assert dataset["labels"]["7"] == "autochthon" and len(dataset["labels"]) == 9
    for case in ("ct_a", "ct_b"):
        image = nib.load(output / "imagesTr" / f"{case}.nii.gz")
        labels = nib.load(output / "labelsTr" / f"{case}.nii.gz")
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        np.testing.assert_allclose(labels.affine, image.affine, atol=1e-3)
        ct, merged = np.asarray(image.dataobj), np.asarray(labels.dataobj)
        # every class sits on the voxels whose CT value marks its structure; left and right autochthon merge
        for value, klass in set(STRUCTURES.values()):
            if klass:
                assert (merged == klass).sum() > 0 and np.all(ct[merged == klass] == value), (case, klass)
        assert set(np.unique(merged)) == {0, 2, 5, 7, 8}  # label 99 is not one of the 8 structures


def test_a_missing_source_file_is_named(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 1 and "example_ct_sm.nii.gz is missing" in result.stderr
