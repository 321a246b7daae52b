"""The bundle's preflight dataset check, and scans smaller than the patch, in real ``monai.bundle run``s."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np

from gdlseg.data.synthetic import write_dataset

from .conftest import run_bundle, runs_of, sqlite_uri


def files_under(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) if folder.exists() else []


def test_three_defects_are_all_named_and_nothing_is_written(bundle, dataset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    label = broken / "labelsTr" / "phantom_000.nii.gz"
    original = nib.load(label)
    labels = np.asarray(original.dataobj).copy()
    labels[0, 0, 0] = 9
    nib.save(nib.Nifti1Image(labels, original.affine), label)  # a label value >= num_classes
    (broken / "imagesTr" / "phantom_001.nii.gz").unlink()  # a listed image missing
    truncated = broken / "imagesTr" / "phantom_002.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])  # a truncated file
    output = tmp_path / "out"
    result = run_bundle(bundle, ["train.yaml"], {"dataset_dir": broken, "output_dir": output}, check=False)
    assert result.returncode != 0
    assert "the dataset check found 3 problem(s) in 4 case(s)" in result.stderr
    assert "phantom_000: label phantom_000.nii.gz: label values 9 outside [0, 4)" in result.stderr
    assert "phantom_001: image phantom_001.nii.gz: does not exist" in result.stderr
    assert "phantom_002: image phantom_002.nii.gz: is a truncated or corrupt gzip file" in result.stderr
    # Nothing at all in the output folder: no model, checkpoint, training record, report or MLflow store
    # (the check runs before the tracker creates its run).
    assert files_under(output) == []


def test_a_scan_smaller_than_the_patch_is_padded_and_trains(bundle, tmp_path):
    tiny = tmp_path / "tiny"
    write_dataset(tiny, training=2, test=0, shape=(12, 10, 6), seed=4)  # roi_size is 32×32×16
    output = tmp_path / "out"
    run_bundle(
        bundle,
        ["train.yaml"],
        {"dataset_dir": tiny, "output_dir": output, "train#trainer#max_epochs": "1", "val_fraction": "0.5"},
    )
    assert (output / "models" / "model.pt").is_file()
    [run] = runs_of(sqlite_uri(output))[1]
    assert run.info.status == "FINISHED"
