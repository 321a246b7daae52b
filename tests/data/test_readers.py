"""SimpleITKReader: NRRD, MetaImage and DICOM series load with the geometry MONAI's readers use."""

import numpy as np
import pytest
import SimpleITK as sitk
from monai.transforms import LoadImage

from gdlseg.data import SimpleITKReader
from gdlseg.data.readers import is_dicom_series_folder, ras_affine, read_dicom_series

from .dicom import write_dicom_series


def oblique_image() -> sitk.Image:
    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)  # (z, y, x)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((10.0, -5.0, 33.0))
    angle = np.deg2rad(15)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    return image


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_files_load_like_nibabel_loads_the_same_scan_as_nifti(tmp_path, suffix):
    image = oblique_image()
    sitk.WriteImage(image, str(tmp_path / f"scan{suffix}"))
    sitk.WriteImage(image, str(tmp_path / "scan.nii.gz"))
    ours = LoadImage(reader=SimpleITKReader(), image_only=True)(tmp_path / f"scan{suffix}")
    nifti = LoadImage(reader="NibabelReader", image_only=True)(tmp_path / "scan.nii.gz")
    assert ours.shape == nifti.shape == (7, 6, 5)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(nifti))
    np.testing.assert_allclose(ours.affine, nifti.affine, atol=1e-5)


def test_dicom_series_folder_loads_with_its_geometry(tmp_path):
    volume = np.random.default_rng(0).integers(-100, 100, size=(6, 8, 9)).astype(np.int16)
    written = write_dicom_series(tmp_path / "series", volume)
    assert is_dicom_series_folder(tmp_path / "series") and not is_dicom_series_folder(tmp_path)
    loaded = LoadImage(reader=SimpleITKReader(), image_only=True)(tmp_path / "series")
    assert loaded.shape == (9, 8, 6)
    np.testing.assert_array_equal(np.asarray(loaded), volume.transpose(2, 1, 0))
    np.testing.assert_allclose(loaded.affine, ras_affine(written), atol=1e-4)
    assert not any("0010" in str(key) for key in loaded.meta)  # no patient tags in the metadata


def test_folder_with_two_series_names_them(tmp_path):
    volume = np.zeros((3, 4, 4), dtype=np.int16)
    write_dicom_series(tmp_path / "mixed", volume, series_uid="1.2.3.4")
    write_dicom_series(tmp_path / "other", volume, series_uid="1.2.3.5")
    for path in (tmp_path / "other").iterdir():
        path.rename(tmp_path / "mixed" / f"b_{path.name}")
    with pytest.raises(ValueError, match=r"holds 2 DICOM series \(1\.2\.3\.4, 1\.2\.3\.5\)"):
        read_dicom_series(tmp_path / "mixed")
    assert read_dicom_series(tmp_path / "mixed", "1.2.3.5").GetSize() == (4, 4, 3)


def test_ras_affine_flips_lps():
    image = sitk.Image(2, 2, 2, sitk.sitkUInt8)
    image.SetOrigin((1.0, 2.0, 3.0))
    np.testing.assert_allclose(ras_affine(image)[:3, 3], [-1.0, -2.0, 3.0])
    np.testing.assert_allclose(np.diag(ras_affine(image))[:3], [-1.0, -1.0, 1.0])
