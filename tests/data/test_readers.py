"""Readers: NRRD, MetaImage and DICOM series load with the geometry MONAI's readers use; bad files are named."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monai.data import NibabelReader
from monai.transforms import LoadImage

from gdlseg.data import SimpleITKReader
from gdlseg.data.readers import ScanError, is_dicom_series_folder, ras_affine, read_array, read_header, read_image

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


def test_ras_affine_flips_lps():
    image = sitk.Image(2, 2, 2, sitk.sitkUInt8)
    image.SetOrigin((1.0, 2.0, 3.0))
    np.testing.assert_allclose(ras_affine(image)[:3, 3], [-1.0, -2.0, 3.0])
    np.testing.assert_allclose(np.diag(ras_affine(image))[:3], [-1.0, -1.0, 1.0])


# --- headers and arrays as the training pipeline sees them ------------------------------------------
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_header_and_array_match_what_the_bundle_readers_load(tmp_path, suffix):
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(oblique_image(), str(path))
    loaded = LoadImage(reader=[NibabelReader(), SimpleITKReader()], image_only=True)(path)
    header = read_header(path)
    array, affine = read_array(path)
    assert header.shape == array.shape == tuple(loaded.shape) == (7, 6, 5)
    np.testing.assert_array_equal(array, np.asarray(loaded))
    np.testing.assert_allclose(header.affine, np.asarray(loaded.affine), atol=1e-5)
    np.testing.assert_allclose(affine, np.asarray(loaded.affine), atol=1e-5)


# --- bad files: ScanError naming the file; SimpleITK alone would not notice some of them ----------------
def nifti(tmp_path, name="scan.nii.gz", shape=(8, 9, 10)):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random(shape, dtype=np.float32), np.eye(4)), path)
    return path


def test_truncated_nifti_gz_is_refused_although_simpleitk_reads_it_as_zeros(tmp_path):
    path = nifti(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert (sitk.GetArrayFromImage(sitk.ReadImage(str(path))) == 0).any()  # the defect we guard against
    for read in (read_image, read_header, read_array):
        if read is read_header:
            continue  # the header alone is intact
        with pytest.raises(ScanError, match="truncated or corrupt gzip") as error:
            read(path)
        assert str(path) in str(error.value) and str(path) not in error.value.reason


def test_corrupt_gzip_stream_is_caught_by_its_crc(tmp_path):
    path = nifti(tmp_path)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(ScanError, match=r"scan\.nii\.gz: is a truncated or corrupt gzip file"):
        read_array(path)


def test_truncated_uncompressed_nifti_is_refused(tmp_path):
    path = nifti(tmp_path, "scan.nii")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ScanError, match=r"scan.nii: is truncated: \d+ bytes where its header announces \d+"):
        read_image(path)


def test_header_only_fragment_is_not_nifti(tmp_path):
    path = nifti(tmp_path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ScanError, match="cannot be read as NIfTI"):
        read_header(path)


def test_zero_size_dimension_is_refused_although_simpleitk_reports_one(tmp_path):
    path = nifti(tmp_path, shape=(8, 0, 10))
    assert sitk.ReadImage(str(path)).GetSize() == (8, 1, 10)
    with pytest.raises(ScanError, match=r"zero-size dimension \(shape \(8, 0, 10\)\)"):
        read_image(path)


@pytest.mark.parametrize("name", ["scan.nrrd", "scan.mha"])
def test_garbage_and_missing_files_are_named(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(ScanError, match=f"{name}: does not exist"):
        read_image(path)
    path.write_bytes(b"not an image" * 10)
    with pytest.raises(ScanError, match=f"{name}: cannot be read") as error:
        read_image(path)
    assert str(tmp_path) not in error.value.reason
