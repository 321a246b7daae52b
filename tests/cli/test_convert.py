"""``gdlseg convert``: DICOM series to NIfTI with their geometry and without any DICOM tag."""

import subprocess

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from gdlseg.cli.main import main
from gdlseg.data.readers import ras_affine
from tests.cli.test_main import gdlseg_command
from tests.data.dicom import PATIENT_ID, PATIENT_NAME, write_dicom_series

VOLUME = np.random.default_rng(0).integers(-500, 500, size=(6, 8, 9)).astype(np.int16)  # (z, y, x)
OBLIQUE = (0.96592583, -0.25881905, 0.0, 0.25881905, 0.96592583, 0.0, 0.0, 0.0, 1.0)  # 15° about z


def test_series_becomes_nifti_with_its_geometry_and_no_patient_tag(tmp_path):
    written = write_dicom_series(tmp_path / "CT_0001", VOLUME, direction=OBLIQUE)
    output = tmp_path / "out" / "CT_0001.nii.gz"
    result = subprocess.run(
        [gdlseg_command(), "convert", str(tmp_path / "CT_0001"), str(output)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "9x8x6 voxels of 0.8x0.8x2.5 mm" in result.stderr
    converted = nib.load(output)
    np.testing.assert_array_equal(np.asarray(converted.dataobj), VOLUME.transpose(2, 1, 0))
    np.testing.assert_allclose(converted.affine, ras_affine(written), atol=1e-4)
    content = output.read_bytes()
    assert PATIENT_NAME.encode() not in content and PATIENT_ID.encode() not in content
    assert [p.name for p in output.parent.iterdir()] == ["CT_0001.nii.gz"]  # no temporary file left


def test_a_single_dicom_file_to_nrrd_carries_no_tag(tmp_path):
    write_dicom_series(tmp_path / "series", VOLUME[:1])
    output = tmp_path / "slice.nrrd"
    assert main(["convert", str(tmp_path / "series" / "slice_000.dcm"), str(output)]) == 0
    assert sitk.ReadImage(str(tmp_path / "series" / "slice_000.dcm")).HasMetaDataKey("0010|0010")  # the input has it
    content = output.read_bytes()
    assert PATIENT_NAME.encode() not in content and PATIENT_ID.encode() not in content


def test_two_series_are_listed_and_one_is_chosen(tmp_path, capsys):
    write_dicom_series(tmp_path / "study", VOLUME, series_uid="1.2.3.4", description="AX CT")
    write_dicom_series(tmp_path / "study", VOLUME[:3], series_uid="1.2.3.5", description="SCOUT", prefix="b")
    output = tmp_path / "ct.nii.gz"
    assert main(["convert", str(tmp_path / "study"), str(output)]) == 1
    error = capsys.readouterr().err
    assert "holds 2 DICOM series; choose one with --series-uid" in error
    assert '1.2.3.4  "AX CT", CT, 6 slices' in error and '1.2.3.5  "SCOUT", CT, 3 slices' in error
    assert PATIENT_NAME not in error and not output.exists()
    assert main(["convert", str(tmp_path / "study"), str(output), "--series-uid", "1.2.3.4"]) == 0
    assert nib.load(output).shape == (9, 8, 6)


def test_missing_slice_is_refused_unless_allowed(tmp_path, capsys):
    write_dicom_series(tmp_path / "series", VOLUME)
    (tmp_path / "series" / "slice_002.dcm").unlink()
    output = tmp_path / "ct.nii.gz"
    assert main(["convert", str(tmp_path / "series"), str(output)]) == 1
    error = capsys.readouterr().err
    assert f"gdlseg convert: error: {tmp_path / 'series'}: irregular DICOM series: missing slice(s)" in error
    assert "--allow-irregular" in error and not output.exists()
    assert main(["convert", str(tmp_path / "series"), str(output), "--allow-irregular"]) == 0
    assert "gdlseg convert: warning:" in capsys.readouterr().err and nib.load(output).shape == (9, 8, 5)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["missing", "out.nii.gz"], "INPUT missing does not exist"),
        (["series", "out.png"], "must end with one of .nii.gz"),
        (["series", "series/inside.nii.gz"], "would be written into the input"),
        (["series", "existing.nii.gz"], "exists; pass --overwrite"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(tmp_path, monkeypatch, capsys, arguments, message):
    monkeypatch.chdir(tmp_path)
    write_dicom_series(tmp_path / "series", VOLUME[:2])
    (tmp_path / "existing.nii.gz").write_bytes(b"keep me")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["convert", *arguments]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "existing.nii.gz").read_bytes() == b"keep me"


def test_truncated_nifti_input_is_named(tmp_path, capsys):
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 16), np.float32), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:-400])
    assert main(["convert", str(path), str(tmp_path / "scan.nrrd")]) == 1
    assert "scan.nii.gz: is a truncated or corrupt gzip file" in capsys.readouterr().err
    assert not (tmp_path / "scan.nrrd").exists()
