"""``gdlseg analyze``: fingerprint JSON and chart of a dataset; suggestions follow the documented rules."""

import json

import nibabel as nib
import numpy as np
import pytest

from gdlseg.cli.main import main
from gdlseg.data.class_weights import volume_class_weights
from gdlseg.data.fingerprint import ras_geometry, suggest_pixdim
from gdlseg.data.synthetic import SPACING, write_dataset


@pytest.fixture
def dataset(tmp_path):
    write_dataset(tmp_path / "data", training=3, test=1, shape=(20, 18, 12), seed=3)
    return tmp_path / "data"


def test_fingerprint_of_the_phantoms(dataset, tmp_path, capsys):
    output = tmp_path / "analysis"
    assert main(["analyze", str(dataset), "--output", str(output)]) == 0
    fingerprint = json.loads((output / "fingerprint.json").read_text())
    assert (output / "class_distribution.png").read_bytes().startswith(b"\x89PNG")
    assert fingerprint["cases_analysed"] == 3 and fingerprint["failed_cases"] == []
    assert fingerprint["class_names"] == ["background", "organ", "vessel", "lesion"]
    # The phantoms are stored rotated and flipped (LPS-like, oblique): the spacing per RAS axis is still theirs.
    np.testing.assert_allclose(fingerprint["spacing_mm"]["median"], SPACING, atol=1e-4)
    assert fingerprint["shape"]["median"] == [20, 18, 12]
    voxels = np.zeros(4, dtype=np.int64)
    for path in sorted((dataset / "labelsTr").iterdir()):
        voxels += np.bincount(np.asarray(nib.load(path).dataobj).ravel(), minlength=4)
    assert fingerprint["class_voxels"] == voxels.tolist()
    case = fingerprint["cases"][0]
    assert case["case"] == "phantom_000"
    np.testing.assert_allclose(
        case["class_volume_ml"], np.array(case["class_voxels"]) * 1.5 * 1.5 * 2.5 / 1000, atol=1e-3
    )
    suggested = fingerprint["suggested"]
    np.testing.assert_allclose(suggested["pixdim"], SPACING, atol=1e-4)
    assert suggested["class_weights"] == [round(w, 4) for w in volume_class_weights(voxels)]
    assert suggested["intensity"] == "ct" and "ct_window" not in suggested  # the datalist says CT
    foreground = fingerprint["intensity_foreground"]
    assert -60 < foreground["percentile_00_5"] < 60 and 150 < foreground["percentile_99_5"] < 250  # organ…vessel HU
    assert "/" not in json.dumps(fingerprint)  # case names, no paths
    err = capsys.readouterr().err
    assert "gdlseg train options: --pixdim 1.5 1.5 2.5 --classes background organ vessel lesion" in err


def test_a_bad_case_is_left_out_and_named(dataset, tmp_path, capsys):
    (dataset / "labelsTr" / "phantom_001.nii.gz").unlink()
    output = tmp_path / "analysis"
    assert main(["analyze", str(dataset), "--output", str(output)]) == 1
    fingerprint = json.loads((output / "fingerprint.json").read_text())
    assert fingerprint["cases_analysed"] == 2
    assert fingerprint["failed_cases"] == [
        {"case": "phantom_001", "problems": ["phantom_001: label phantom_001.nii.gz: does not exist"]}
    ]
    assert "left out phantom_001" in capsys.readouterr().err


def test_no_readable_case_writes_nothing(dataset, tmp_path, capsys):
    for path in (dataset / "imagesTr").iterdir():
        path.write_bytes(b"broken")
    output = tmp_path / "analysis"
    assert main(["analyze", str(dataset), "--output", str(output)]) == 1
    assert "no case could be analysed" in capsys.readouterr().err
    assert not output.exists()


def test_pixdim_rule_median_or_tenth_percentile_for_anisotropic_data():
    shapes = np.array([[512, 512, 40]] * 10)
    spacings = np.array([[0.7, 0.7, z] for z in (1.0, 1.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0)])
    assert suggest_pixdim(spacings, shapes) == [0.7, 0.7, 1.0]  # 10th percentile of z: keeps thin slices
    assert suggest_pixdim(spacings, np.array([[512, 512, 400]] * 10)) == [0.7, 0.7, 5.0]  # enough slices: median
    isotropic = np.array([[1.0, 1.2, 1.1], [0.8, 1.0, 0.9], [1.2, 1.4, 1.3]])
    assert suggest_pixdim(isotropic, np.array([[100, 100, 100]] * 3)) == [1.0, 1.2, 1.1]


def test_ras_geometry_follows_the_axes_not_the_index_order():
    affine = np.array([[0, 0, -2.5, 10], [-0.8, 0, 0, 5], [0, 0.9, 0, 0], [0, 0, 0, 1.0]])  # voxel x → −A, …
    spacing, shape = ras_geometry(affine, (30, 40, 50))
    assert spacing == pytest.approx([2.5, 0.8, 0.9]) and shape == [50, 30, 40]


@pytest.mark.parametrize("layout", ["files", "4d"])
def test_every_channel_has_its_foreground_intensities(tmp_path, capsys, layout):
    from tests.data.channels import write_channel_dataset

    data, output = tmp_path / "data", tmp_path / "analysis"
    write_channel_dataset(data, layout, training=3, test=0)
    assert main(["analyze", str(data), "--output", str(output)]) == 0
    fingerprint = json.loads((output / "fingerprint.json").read_text())
    first, second = fingerprint["intensity_foreground_by_channel"]
    assert fingerprint["intensity_foreground"] == first
    assert 150 < second["mean"] < 650  # the MR-like channel: foreground signal 250–700, far from channel 0's HU
    assert abs(second["mean"] - first["mean"]) > 100
    assert all(len(case["intensity_foreground_by_channel"]) == 2 for case in fingerprint["cases"])
    err = capsys.readouterr().err
    assert "T2: foreground intensity 0.5–99.5th percentile" in err
