"""Datalists: Decathlon layout, validation split, inference inputs, errors naming the file."""

import json

import numpy as np
import pytest
import torch

from gdlseg.data.datalist import (
    case_name,
    datalist_class_count,
    datalist_fingerprint,
    inference_inputs,
    prediction_subject,
    require_unique_case_names,
    segmentable_cases,
    split_datalist,
)


def write(path, content):
    path.write_text(json.dumps(content))
    return path


def cases(n):
    return [{"image": f"imagesTr/c{i}.nii.gz", "label": f"labelsTr/c{i}.nii.gz"} for i in range(n)]


def test_relative_paths_resolve_and_validation_list_is_used(tmp_path):
    datalist = write(tmp_path / "d.json", {"training": cases(3), "validation": [cases(4)[3]]})
    training = split_datalist(datalist, tmp_path, "training")
    validation = split_datalist(datalist, tmp_path, "validation")
    assert [c["image"] for c in training] == [str(tmp_path / f"imagesTr/c{i}.nii.gz") for i in range(3)]
    assert validation == [
        {"image": str(tmp_path / "imagesTr/c3.nii.gz"), "label": str(tmp_path / "labelsTr/c3.nii.gz")}
    ]


def test_hold_out_is_seeded_and_disjoint(tmp_path):
    datalist = write(tmp_path / "d.json", {"training": cases(10)})
    a = split_datalist(datalist, tmp_path, "validation", 0.2, seed=1)
    assert a == split_datalist(datalist, tmp_path, "validation", 0.2, seed=1)
    assert len(a) == 2
    training = split_datalist(datalist, tmp_path, "training", 0.2, seed=1)
    assert len(training) == 8 and not {c["image"] for c in a} & {c["image"] for c in training}
    assert a != split_datalist(datalist, tmp_path, "validation", 0.2, seed=2)


@pytest.mark.parametrize(
    "content, message",
    [(None, "does not exist"), ("not json", "is not valid JSON"), ({"training": []}, 'no non-empty "training"')],
)
def test_bad_datalists_are_named(tmp_path, content, message):
    path = tmp_path / "dataset.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ValueError, match=message) as error:
        split_datalist(path, tmp_path, "training")
    assert str(path) in str(error.value)


def test_fingerprint_has_counts_and_hash_but_no_paths(tmp_path):
    datalist = write(tmp_path / "d.json", {"training": cases(3), "test": ["imagesTs/x.nii.gz"]})
    fingerprint = datalist_fingerprint(datalist)
    assert fingerprint["training_cases"] == 3 and fingerprint["test_cases"] == 1
    assert len(fingerprint["datalist_sha256"]) == 64 and "imagesTr" not in json.dumps(fingerprint)


def test_inference_inputs_from_files_folders_and_datalists(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a.nii.gz", "b.nrrd", "notes.txt"):
        (folder / name).write_text("x")
    datalist = write(tmp_path / "d.json", {"training": cases(1), "test": ["imagesTs/t.nii.gz"]})
    found = inference_inputs([folder / "a.nii.gz", folder, datalist], tmp_path)
    assert [c["image"] for c in found] == [
        str(folder / "a.nii.gz"),
        str(folder / "a.nii.gz"),
        str(folder / "b.nrrd"),
        str(tmp_path / "imagesTs/t.nii.gz"),
    ]
    with pytest.raises(ValueError, match="does not exist"):
        inference_inputs(tmp_path / "missing.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        inference_inputs(tmp_path / "empty")


def test_case_names():
    assert case_name("/x/liver_001.nii.gz") == "liver_001"
    assert case_name("/x/scan.nrrd") == "scan"
    assert case_name("/x/series_folder") == "series_folder"


def test_uid_named_series_keep_their_whole_name_in_monai_saveimage(tmp_path):
    import numpy as np
    from monai.transforms import SaveImage

    saver = SaveImage(
        output_dir=tmp_path,
        output_postfix="seg",
        output_ext=".nii.gz",
        separate_folder=False,
        output_name_formatter=prediction_subject,
        print_log=False,
    )
    for folder in ["1.2.840.99.5", "1.2.840.99.6", "liver_003.nii.gz"]:
        saver(np.zeros((1, 4, 4, 4), np.uint8), meta_data={"filename_or_obj": str(tmp_path / "in" / folder)})
    written = sorted(path.name for path in tmp_path.glob("*_seg.nii.gz"))
    assert written == ["1.2.840.99.5_seg.nii.gz", "1.2.840.99.6_seg.nii.gz", "liver_003_seg.nii.gz"]


def test_two_inputs_with_one_case_name_are_refused_by_name():
    cases = [{"image": "/scans/a.nii.gz"}, {"image": "/scans/b.mha"}]
    assert require_unique_case_names(cases) is cases
    with pytest.raises(ValueError, match=r"case name 'a' is used by two inputs \(a.nii.gz and a.nrrd\)"):
        require_unique_case_names([*cases, {"image": "/other/a.nrrd"}])


def test_case_names_are_checked_whatever_problem_a_case_has_and_problem_cases_are_skipped(caplog):
    cases = [
        {"image": ["/scans/a_0000.nii.gz", "/scans/a_0001.nii.gz"], "case": "a"},
        {
            "image": "/scans/b_0000.nii.gz",
            "case": "b",
            "problem": "b: has channel files ['_0000']; the network takes 2",
        },
    ]
    assert require_unique_case_names(cases) is cases  # names only: b's problem is not its business
    with caplog.at_level("WARNING", logger="gdlseg.data.datalist"):
        assert segmentable_cases(cases) == cases[:1]
    assert "b: has channel files ['_0000']" in caplog.text and "/scans" not in caplog.text
    with pytest.raises(ValueError, match=r"no input can be segmented: b: has channel files"):
        segmentable_cases(cases[1:])


@pytest.mark.parametrize("channel_dim", [0, 0.0, "0", np.int64(0), np.array(0), torch.tensor(0), torch.tensor([0])])
def test_outputs_of_stacked_channel_files_drop_the_channel_suffix_whatever_the_metadata_type(channel_dim):
    metadata = {"filename_or_obj": "/scans/case_007_0000.nii.gz", "original_channel_dim": channel_dim}
    assert prediction_subject(metadata)["subject"] == "case_007.nii.gz"


@pytest.mark.parametrize("channel_dim", [None, -1, float("nan"), "no_channel", torch.tensor([0, 0]), torch.tensor(-1)])
def test_outputs_of_one_file_keep_their_name(channel_dim):
    metadata = {"filename_or_obj": "/scans/case_007_0000.nii.gz", "original_channel_dim": channel_dim}
    assert prediction_subject(metadata)["subject"] == "case_007_0000.nii.gz"


def test_class_count_needs_only_labels(tmp_path):
    assert datalist_class_count(write(tmp_path / "labels.json", {"labels": {"0": "bg", "1": "liver"}})) == 2
    assert datalist_class_count(write(tmp_path / "none.json", {"training": [{"image": "a", "label": "b"}]})) is None
    assert datalist_class_count(tmp_path / "missing.json") is None
    (tmp_path / "folder.json").mkdir()
    assert datalist_class_count(tmp_path / "folder.json") is None
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe{")
    assert datalist_class_count(tmp_path / "binary.json") is None
