"""``gdlseg check-data``: every problem of a dataset on one line each, exit 1; a good dataset exits 0."""

import json
import subprocess

import nibabel as nib
import numpy as np
import pytest

from gdlseg.cli.main import main
from gdlseg.data.synthetic import write_dataset
from tests.cli.test_main import gdlseg_command
from tests.data.channels import write_channel_dataset


@pytest.fixture
def dataset(tmp_path):
    write_dataset(tmp_path / "data", training=3, test=1, shape=(16, 16, 12), seed=2)
    return tmp_path / "data"


def test_good_dataset_exits_0(dataset):
    result = subprocess.run([gdlseg_command(), "check-data", str(dataset)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "3 labelled case(s) checked, no problem found" in result.stderr


def test_every_problem_is_listed_without_folders(dataset, capsys):
    labels = np.asarray(nib.load(dataset / "labelsTr" / "phantom_000.nii.gz").dataobj).astype(np.int16)
    labels[0, 0, 0] = -3
    nib.save(nib.Nifti1Image(labels, nib.load(dataset / "labelsTr" / "phantom_000.nii.gz").affine),
             dataset / "labelsTr" / "phantom_000.nii.gz")  # fmt: skip
    nib.save(nib.Nifti1Image(np.zeros((16, 16), np.float32), np.eye(4)), dataset / "imagesTr" / "phantom_002.nii.gz")
    code = main(["check-data", str(dataset), "--classes", "background", "organ", "vessel", "lesion", "--class-weights",
                 "1", "2"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1
    assert out.splitlines() == [
        "settings: class_weights has 2 entries but num_classes is 4",
        "phantom_000: label phantom_000.nii.gz: label values -3 outside [0, 4) (num_classes=4)",
        "phantom_002: image phantom_002.nii.gz: is 2D (shape (16, 16)); training needs a 3D scan (one channel)",
    ]
    assert str(dataset) not in out
    assert "3 problem(s) in 3 case(s) or setting(s)" in err


def test_class_count_comes_from_the_datalist_labels_or_the_options(dataset, capsys):
    assert main(["check-data", str(dataset), "--num-classes", "3"]) == 1  # the phantoms hold label 3
    assert "outside [0, 3) (num_classes=3)" in capsys.readouterr().out
    content = json.loads((dataset / "dataset.json").read_text())
    del content["labels"]
    (dataset / "dataset.json").write_text(json.dumps(content))
    assert main(["check-data", str(dataset)]) == 2
    assert "pass --classes or --num-classes" in capsys.readouterr().err


def test_missing_datalist_and_dataset(tmp_path, capsys):
    assert main(["check-data", str(tmp_path), "--num-classes", "2"]) == 1
    assert capsys.readouterr().out.strip() == "datalist: datalist dataset.json does not exist"
    assert main(["check-data", str(tmp_path / "nowhere"), "--num-classes", "2"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_every_channel_is_checked_and_named(tmp_path, capsys):
    data = tmp_path / "channels"
    write_channel_dataset(data, "files", training=2, test=0)
    assert main(["check-data", str(data), "--intensity", "ct", "mr"]) == 0
    channel = data / "imagesTr" / "case_001_0001.nii.gz"
    image = nib.load(channel)
    moved = image.affine.copy()
    moved[:3, 3] += [0.0, 0.0, 4.0]
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), moved), channel)
    capsys.readouterr()
    assert main(["check-data", str(data), "--intensity", "ct", "mr", "mr"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("settings: intensity lists 3 presets ['ct', 'mr', 'mr'] for 2 image channel(s)")
    assert out[1].startswith("case_001: image channel 1 (T2) case_001_0001.nii.gz: not on channel 0's grid: origin")
    assert len(out) == 2 and str(data) not in "\n".join(out)
