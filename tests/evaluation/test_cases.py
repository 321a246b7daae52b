"""Pairing predictions with references by case name."""

import pytest

from gdlseg.evaluation.cases import index_folder, pair_cases, prediction_case_name


def touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_pairs_by_case_name_and_lists_the_rest(tmp_path):
    touch(tmp_path / "pred", "a_seg.nii.gz", "b_seg.nrrd", "c_seg.nii.gz", ".a_seg.123.tmp.nii.gz", "notes.json")
    touch(tmp_path / "ref", "a.nii.gz", "b.nii", "d.mha", "d.raw")
    pairs = pair_cases(tmp_path / "pred", tmp_path / "ref")
    assert {case: (p.name, r.name) for case, (p, r) in pairs.matched.items()} == {
        "a": ("a_seg.nii.gz", "a.nii.gz"),
        "b": ("b_seg.nrrd", "b.nii"),
    }
    assert pairs.predictions_without_reference == ["c"]
    assert pairs.references_without_prediction == ["d"]


def test_case_names():
    assert prediction_case_name("/x/liver_003_seg.nii.gz") == "liver_003"
    assert prediction_case_name("/x/liver_003.nii.gz") == "liver_003"
    assert prediction_case_name("/x/seg_seg.mha") == "seg"


def test_two_files_of_one_case_and_missing_folders_are_refused(tmp_path):
    touch(tmp_path / "pred", "a_seg.nii.gz", "a.nii.gz")
    with pytest.raises(ValueError, match=r"a\.nii\.gz and a_seg\.nii\.gz are both case 'a'"):
        index_folder(tmp_path / "pred", prediction=True)
    with pytest.raises(ValueError, match="is not a folder"):
        index_folder(tmp_path / "missing")
