"""The datalist as an MLflow dataset input: case names as inference names its outputs, no folder."""

import json

from gdlseg.tracking.inputs import datalist_dataset


def test_cases_of_channel_files_are_named_as_their_outputs(tmp_path):
    datalist = tmp_path / "dataset.json"
    training = [
        {
            "image": ["imagesTr/case_000_0000.nii.gz", "imagesTr/case_000_0001.nii.gz"],
            "label": "labelsTr/case_000.nii.gz",
        },
        {"image": "imagesTr/liver_001.nii.gz", "label": "labelsTr/liver_001.nii.gz"},
    ]
    datalist.write_text(json.dumps({"training": training, "test": [["imagesTs/case_009_0000.nii.gz"], []]}))
    dataset = datalist_dataset(datalist)
    profile = json.loads(dataset["profile"])
    assert profile["cases"] == {
        "training": ["case_000", "liver_001"],
        "test": ["case_009_0000", ""],
    }  # one file: its own name
    assert str(tmp_path) not in json.dumps(dataset)
