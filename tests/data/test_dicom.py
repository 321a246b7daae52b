"""DICOM series: a folder with several series is listed, irregular slice geometry is refused."""

import shutil
from pathlib import Path

import nibabel
import numpy as np
import pytest

from gdlseg.data.dicom import dicom_series, read_dicom_series, series_irregularities
from gdlseg.data.readers import ScanError, read_image

from .dicom import PATIENT_ID, PATIENT_NAME, regular_positions, write_dicom_series

AXIAL = np.array([1.0, 0, 0, 0, 1, 0])


def volume(depth=6):
    return np.random.default_rng(0).integers(-100, 100, size=(depth, 8, 9)).astype(np.int16)


# --- slice geometry, known answers ------------------------------------------------------------------
def test_regular_stack_in_any_order_has_no_irregularity():
    positions = np.array(regular_positions(10))[::-1]
    assert series_irregularities(positions, AXIAL, 0.8) == []
    assert series_irregularities(positions[:1], AXIAL, 0.8) == []


def test_gap_of_two_slices_is_counted():
    positions = np.delete(np.array(regular_positions(10)), [4, 5], axis=0)
    [problem] = series_irregularities(positions, AXIAL, 0.8)
    assert "missing slice(s)" in problem and "2 after 19.50 mm" in problem and "slice spacing 2.5 mm" in problem


def test_uneven_spacing_and_duplicates_are_told_apart():
    z = [0.0, 2.5, 5.0, 8.0, 10.5, 10.5]
    problems = series_irregularities(np.array([[0.0, 0.0, v] for v in z]), AXIAL, 0.8)
    assert problems[0].startswith("1 pair(s) of slices share one position")
    assert problems[1] == "uneven slice spacing: steps from 2.5 to 3 mm (median 2.5 mm)"


def test_tilt_is_the_angle_between_stacking_and_normal():
    tilt = np.deg2rad(12.0)
    positions = np.array([[0.0, k * 2.5 * np.tan(tilt), k * 2.5] for k in range(8)])
    [problem] = series_irregularities(positions, AXIAL, 0.8)
    drift = 7 * 2.5 * np.tan(tilt)
    assert problem.startswith(
        f"gantry tilt of 12.00 degrees (slice positions drift {drift:.3g} mm = {drift / 0.8:.3g} pixels"
    )


def test_an_oblique_normal_over_a_short_stack_is_not_a_tilt():
    """Two real Siemens slices (nibabel's test data): 3 mm apart along z, normal 0.3° off z — 0.016 mm drift."""
    orientation = np.array([1.0, 0, 0, 0, 0.999986, -0.005236])
    positions = np.array([[-805.0, -825.019119, -75.097641], [-805.0, -825.019119, -72.097641]])
    assert series_irregularities(positions, orientation, 0.9) == []
    long_stack = np.array([[0.0, 0.0, 3.0 * k] for k in range(100)])  # the same normal over 30 cm: 1.6 mm drift
    assert series_irregularities(long_stack, orientation, 0.9)[0].startswith("gantry tilt of 0.30 degrees")


def test_rounded_positions_of_a_real_scanner_are_regular():
    positions = np.round(np.array(regular_positions(40, spacing=0.625)), 3) + np.array([0, 0, 0.0004])
    assert series_irregularities(positions, AXIAL, 0.8) == []


# --- folders written as DICOM files -----------------------------------------------------------------
def test_folder_with_two_series_lists_them_without_patient_tags(tmp_path):
    write_dicom_series(tmp_path / "mixed", volume(3), series_uid="1.2.3.4", description="AX T1")
    write_dicom_series(tmp_path / "mixed", volume(5), series_uid="1.2.3.5", description="AX T2", prefix="b")
    with pytest.raises(ScanError) as error:
        read_image(tmp_path / "mixed")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'mixed'}: holds 2 DICOM series; choose one with --series-uid")
    assert '1.2.3.4  "AX T1", CT, 3 slices' in message and '1.2.3.5  "AX T2", CT, 5 slices' in message
    assert PATIENT_NAME not in message and PATIENT_ID not in message
    assert [s.uid for s in dicom_series(tmp_path / "mixed")] == ["1.2.3.4", "1.2.3.5"]
    assert read_image(tmp_path / "mixed", series_uid="1.2.3.5").GetSize() == (9, 8, 5)
    with pytest.raises(ScanError, match=r"no DICOM series 9\.9; it holds 1\.2\.3\.4, 1\.2\.3\.5"):
        read_image(tmp_path / "mixed", series_uid="9.9")


def test_regular_series_reads_without_warning(tmp_path, recwarn):
    written = write_dicom_series(tmp_path / "series", volume())
    image = read_image(tmp_path / "series")
    assert image.GetSize() == written.GetSize() and not recwarn.list
    np.testing.assert_allclose(image.GetSpacing(), written.GetSpacing(), atol=1e-5)


def test_missing_slice_is_refused_or_read_with_a_warning(tmp_path):
    write_dicom_series(tmp_path / "series", volume())
    (tmp_path / "series" / "slice_003.dcm").unlink()
    with pytest.raises(ScanError, match="irregular DICOM series: missing slice") as error:
        read_image(tmp_path / "series")
    assert str(tmp_path / "series") in str(error.value) and "--allow-irregular" in str(error.value)
    with pytest.warns(UserWarning, match="missing slice.*geometry is approximate"):
        image = read_image(tmp_path / "series", allow_irregular=True)
    assert image.GetSize() == (9, 8, 5)


def test_uneven_spacing_is_refused(tmp_path):
    z = [12.0, 14.5, 17.0, 19.0, 21.5, 24.0]
    write_dicom_series(tmp_path / "series", volume(), positions=[(-40.0, -30.0, v) for v in z])
    with pytest.raises(ScanError, match=r"uneven slice spacing: steps from 2 to 2\.5 mm"):
        read_dicom_series(tmp_path / "series")


def test_gantry_tilt_is_refused_or_read_with_a_warning(tmp_path):
    shift = 2.5 * np.tan(np.deg2rad(15.0))
    positions = [(-40.0, -30.0 + k * shift, 12.0 + 2.5 * k) for k in range(6)]
    write_dicom_series(tmp_path / "series", volume(), positions=positions)
    with pytest.raises(ScanError, match=r"gantry tilt of 15\.00 degrees"):
        read_image(tmp_path / "series")
    with pytest.warns(UserWarning, match="gantry tilt"):
        assert read_image(tmp_path / "series", allow_irregular=True).GetSize() == (9, 8, 6)


def test_real_dicom_files_read_as_a_regular_series(tmp_path):
    data = Path(nibabel.__file__).parent / "tests" / "data"
    for name in ("0.dcm", "1.dcm"):
        shutil.copy(data / name, tmp_path / name)
    assert read_image(tmp_path).GetSize() == (256, 256, 2)


def test_empty_folder_is_named(tmp_path):
    with pytest.raises(ScanError, match="no DICOM series found"):
        read_image(tmp_path)
