"""A SimpleITK-backed MONAI ``ImageReader`` for NRRD, MetaImage and DICOM series.

NIfTI goes through MONAI's ``NibabelReader``; everything else SimpleITK reads goes through this one.
The array is returned in ``(x, y, z)`` index order with a RAS affine, the conventions of MONAI's
other readers, so that ``Orientationd``/``Spacingd`` and their inverses treat every format alike.
No DICOM tag other than geometry is copied into the metadata (patient tags never leave the file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from monai.data import ImageReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".nii", ".nii.gz")
# Converts ITK's LPS physical space to MONAI's RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_dicom_series_folder(path: os.PathLike | str) -> bool:
    """True for a folder that holds at least one DICOM series SimpleITK can read."""
    if not Path(path).is_dir():
        return False
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns about every non-DICOM folder it scans
    try:
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def read_dicom_series(folder: os.PathLike | str, series_uid: str | None = None) -> sitk.Image:
    """Read one DICOM series from ``folder``.

    Raises:
        ValueError: no series, or several series and no ``series_uid`` (the message lists them).
    """
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise ValueError(f"{folder}: no DICOM series found in this folder.")
    if series_uid is None:
        if len(series) > 1:
            raise ValueError(f"{folder}: holds {len(series)} DICOM series ({', '.join(series)}); choose one.")
        series_uid = series[0]
    elif series_uid not in series:
        raise ValueError(f"{folder}: no DICOM series {series_uid}; it holds {', '.join(series)}.")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))
    return reader.Execute()


def read_image(path: os.PathLike | str) -> sitk.Image:
    """Read a file or a DICOM series folder with SimpleITK."""
    return read_dicom_series(path) if Path(path).is_dir() else sitk.ReadImage(str(path))


def ras_affine(image: sitk.Image) -> np.ndarray:
    """The 4×4 RAS affine mapping ``(x, y, z)`` voxel indices of ``image`` to millimetres."""
    dimension = image.GetDimension()
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)
    affine = np.eye(4)
    affine[:dimension, :dimension] = direction @ np.diag(image.GetSpacing())
    affine[:dimension, 3] = image.GetOrigin()
    return LPS_TO_RAS @ affine


class SimpleITKReader(ImageReader):
    """Load NRRD, MetaImage (.mha/.mhd), single DICOM files and DICOM series folders via SimpleITK.

    Args:
        series_uid: the DICOM series to read from a folder holding several.
        nifti: also accept NIfTI files (by default they are left to ``NibabelReader``).
    """

    def __init__(self, series_uid: str | None = None, nifti: bool = False) -> None:
        super().__init__()
        self.series_uid = series_uid
        self.nifti = nifti

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike) -> bool:
        suffixes = SITK_SUFFIXES if self.nifti else SITK_SUFFIXES[:-2]
        for name in ensure_tuple(filename):
            path = Path(name)
            if not (path.is_dir() or str(path).lower().endswith(suffixes)):
                return False
        return True

    def read(self, data: Sequence[os.PathLike] | os.PathLike, **kwargs) -> list[sitk.Image] | sitk.Image:
        images = []
        for name in ensure_tuple(data):
            if Path(name).is_dir():
                images.append(read_dicom_series(name, self.series_uid))
            else:
                images.append(sitk.ReadImage(str(name)))
        return images if len(images) > 1 else images[0]

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        arrays: list[np.ndarray] = []
        meta: dict = {}
        for image in img if isinstance(img, (list, tuple)) else [img]:  # a sitk.Image is itself iterable
            header: dict = {}
            affine = ras_affine(image)
            header[MetaKeys.AFFINE] = affine
            header[MetaKeys.ORIGINAL_AFFINE] = affine.copy()
            header[MetaKeys.SPATIAL_SHAPE] = np.asarray(image.GetSize())
            header[MetaKeys.SPACE] = SpaceKeys.RAS
            header[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan") if image.GetNumberOfComponentsPerPixel() == 1 else -1
            header["spacing"] = np.asarray(image.GetSpacing())
            # SimpleITK's array is (z, y, x[, components]); MONAI's readers return (x, y, z[, components]).
            array = sitk.GetArrayFromImage(image)
            spatial = image.GetDimension()
            order = tuple(reversed(range(spatial))) + tuple(range(spatial, array.ndim))
            arrays.append(np.ascontiguousarray(array.transpose(order)))
            _copy_compatible_dict(header, meta)
        return _stack_images(arrays, meta), meta
