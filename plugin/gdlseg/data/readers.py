"""Reading scans: SimpleITK for every format (files and DICOM series), nibabel for NIfTI arrays.

:func:`read_image` returns a ``sitk.Image`` (inference, conversion). :func:`read_header` and
:func:`read_array` give the shape, RAS affine and voxels the training pipeline sees (MONAI's
``NibabelReader`` for NIfTI, :class:`SimpleITKReader` for the rest), for dataset checks and
fingerprints. Arrays and shapes are in ``(x, y, z[, …])`` index order and affines map those indices
to RAS millimetres, MONAI's conventions, so that ``Orientationd``/``Spacingd`` and their inverses
treat every format alike.

Every reader raises :class:`ScanError` (a ``ValueError``) naming the file or folder and what is
wrong: missing, unreadable, truncated or corrupt files (NIfTI is verified end to end,
:mod:`gdlseg.data.nifti`), folders with several DICOM series or an irregular one
(:mod:`gdlseg.data.dicom`). No DICOM tag other than geometry is copied into any metadata.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.data import ImageReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple, optional_import

from gdlseg.data.dicom import is_dicom_series_folder, read_dicom_series
from gdlseg.data.errors import ScanError, itk_reason, quiet_itk
from gdlseg.data.nifti import is_nifti, nifti_header, read_nifti, verify_nifti

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it

__all__ = [
    "ScanError",
    "ScanHeader",
    "SimpleITKReader",
    "is_dicom_series_folder",
    "ras_affine",
    "read_array",
    "read_dicom_series",
    "read_header",
    "read_image",
    "without_metadata",
]

SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".nii", ".nii.gz")
# Converts ITK's LPS physical space to MONAI's RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_image(path: os.PathLike | str, series_uid: str | None = None, allow_irregular: bool = False) -> sitk.Image:
    """Read an image file, or one DICOM series of a folder, with SimpleITK.

    Args:
        path: an image file SimpleITK reads (NIfTI, NRRD, MetaImage, a DICOM file) or a DICOM folder.
        series_uid: the series to read from a folder holding several (ignored for files).
        allow_irregular: read an irregular DICOM series with a warning instead of refusing it.

    Raises:
        ScanError: a missing, unreadable, truncated or corrupt file; see :func:`read_dicom_series`
            for folders.
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, series_uid, allow_irregular)
    if not path.is_file():
        raise ScanError(path, "does not exist")
    if is_nifti(path):
        verify_nifti(path)
    with quiet_itk():
        try:
            return sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise ScanError(path, f"cannot be read: {itk_reason(error, path)}") from error


def ras_affine(image: sitk.Image | sitk.ImageFileReader) -> np.ndarray:
    """The 4×4 RAS affine mapping ``(x, y, z)`` voxel indices of ``image`` (or of a reader's header) to mm
    (a 4D image's first three axes: its fourth holds channels)."""
    dimension = image.GetDimension()
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)
    spatial = min(dimension, 3)
    affine = np.eye(4)
    affine[:spatial, :spatial] = direction[:spatial, :spatial] @ np.diag(image.GetSpacing()[:spatial])
    affine[:spatial, 3] = image.GetOrigin()[:spatial]
    return LPS_TO_RAS @ affine


@dataclass(frozen=True)
class ScanHeader:
    """What the training pipeline's readers see of a scan before its voxels.

    ``shape`` is in ``(x, y, z[, …])`` order, a trailing channel (vector pixels) included; ``affine``
    maps the first three indices to RAS millimetres.
    """

    shape: tuple[int, ...]
    affine: np.ndarray


def read_header(path: os.PathLike | str) -> ScanHeader:
    """The shape and RAS affine of a scan as the training pipeline reads it: nibabel for NIfTI
    (MONAI's ``NibabelReader``), SimpleITK for the rest. Reads only the header, except for DICOM
    series (whose geometry needs every slice's header; the series is read whole).

    Raises:
        ScanError: missing or unreadable.
    """
    path = Path(path)
    if path.is_dir():
        image = read_dicom_series(path)
        return ScanHeader(_shape(image.GetSize(), image.GetNumberOfComponentsPerPixel()), ras_affine(image))
    if not path.is_file():
        raise ScanError(path, "does not exist")
    if is_nifti(path):
        image = nifti_header(path)
        return ScanHeader(tuple(int(n) for n in image.shape), np.asarray(image.affine, dtype=np.float64))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with quiet_itk():
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            raise ScanError(path, f"cannot be read: {itk_reason(error, path)}") from error
    return ScanHeader(_shape(reader.GetSize(), reader.GetNumberOfComponents()), ras_affine(reader))


def _shape(size: Sequence[int], components: int) -> tuple[int, ...]:
    """A SimpleITK size with its vector components as a trailing axis, as MONAI's readers shape arrays."""
    return tuple(size) + ((components,) if components > 1 else ())


def read_array(path: os.PathLike | str) -> tuple[np.ndarray, np.ndarray]:
    """The voxels of a scan in ``(x, y, z[, …])`` order and its RAS affine, as the training
    pipeline reads them (NIfTI verified by :func:`read_nifti`; scaling slopes applied).

    Raises:
        ScanError: missing, unreadable, truncated or corrupt.
    """
    path = Path(path)
    if is_nifti(path) and path.is_file():
        image = read_nifti(path)
        return np.asanyarray(image.dataobj), np.asarray(image.affine, dtype=np.float64)
    image = read_image(path)
    return _xyz_array(image), ras_affine(image)


def _xyz_array(image: sitk.Image) -> np.ndarray:
    """SimpleITK's array is ``(z, y, x[, components])``; MONAI's readers return ``(x, y, z[, components])``."""
    array = sitk.GetArrayFromImage(image)
    spatial = image.GetDimension()
    order = tuple(reversed(range(spatial))) + tuple(range(spatial, array.ndim))
    return np.ascontiguousarray(array.transpose(order))


class SimpleITKReader(ImageReader):
    """Load NRRD, MetaImage (.mha/.mhd), single DICOM files and DICOM series folders via SimpleITK.

    Args:
        series_uid: the DICOM series to read from a folder holding several.
        nifti: also accept NIfTI files (by default they are left to ``NibabelReader``).
        allow_irregular: read irregular DICOM series with a warning (see :func:`read_dicom_series`).
    """

    def __init__(self, series_uid: str | None = None, nifti: bool = False, allow_irregular: bool = False) -> None:
        super().__init__()
        self.series_uid = series_uid
        self.nifti = nifti
        self.allow_irregular = allow_irregular

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike) -> bool:
        suffixes = SITK_SUFFIXES if self.nifti else SITK_SUFFIXES[:-2]
        for name in ensure_tuple(filename):
            path = Path(name)
            if not (path.is_dir() or str(path).lower().endswith(suffixes)):
                return False
        return True

    def read(self, data: Sequence[os.PathLike] | os.PathLike, **kwargs) -> list[sitk.Image] | sitk.Image:
        images = [read_image(name, self.series_uid, self.allow_irregular) for name in ensure_tuple(data)]
        return images if len(images) > 1 else images[0]

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        arrays: list[np.ndarray] = []
        meta: dict = {}
        for image in img if isinstance(img, (list, tuple)) else [img]:  # a sitk.Image is itself iterable
            header: dict = {}
            affine = ras_affine(image)
            header[MetaKeys.AFFINE] = affine
            header[MetaKeys.ORIGINAL_AFFINE] = affine.copy()
            # a 4D scalar image (a Decathlon NIfTI) holds its channels last, as vector pixels do
            channels_last = image.GetNumberOfComponentsPerPixel() > 1 or image.GetDimension() == 4
            spatial = 3 if image.GetDimension() == 4 else image.GetDimension()
            header[MetaKeys.SPATIAL_SHAPE] = np.asarray(image.GetSize()[:spatial])
            header[MetaKeys.SPACE] = SpaceKeys.RAS
            header[MetaKeys.ORIGINAL_CHANNEL_DIM] = -1 if channels_last else float("nan")
            header["spacing"] = np.asarray(image.GetSpacing()[:spatial])
            arrays.append(_xyz_array(image))
            _copy_compatible_dict(header, meta)
        return _stack_images(arrays, meta), meta


def without_metadata(image: sitk.Image) -> sitk.Image:
    """A copy of ``image`` with its voxels and geometry only: no metadata dictionary entry (a DICOM
    file read by SimpleITK carries every tag, patient tags included, and some writers store them)."""
    copy = sitk.Image(image)
    for key in copy.GetMetaDataKeys():
        copy.EraseMetaData(key)
    return copy
