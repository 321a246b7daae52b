"""Scans of one off-centre bright box stored in several geometries, for geometry round trips."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from tests.data.dicom import write_dicom_series

SHAPE = (30, 28, 20)  # x, y, z
BOX = (slice(4, 14), slice(6, 20), slice(3, 9))  # off-centre on every axis: a flip would move it


def box_volume(shape=SHAPE) -> np.ndarray:
    """``(x, y, z)`` int16 HU: a 500 HU box in air (-1000 HU)."""
    volume = np.full(shape, -1000, dtype=np.int16)
    volume[BOX] = 500
    return volume


def _rotation(degrees: float) -> np.ndarray:
    angle = math.radians(degrees)
    return np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])


def write_geometry_cases(folder: Path) -> dict[str, Path]:
    """RAS anisotropic, oblique LPS-stored NIfTI, LPS NRRD, oblique MHA and a DICOM series."""
    folder.mkdir(parents=True, exist_ok=True)
    volume = box_volume()
    paths = {}
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 3.0, 1.0])), folder / "ras_anisotropic.nii.gz")
    oblique = np.eye(4)
    oblique[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ _rotation(17.0) @ np.diag([1.5, 1.5, 2.5])
    oblique[:3, 3] = [40.0, -25.0, 60.0]
    nib.save(nib.Nifti1Image(volume, oblique), folder / "oblique.nii.gz")
    zyx = np.ascontiguousarray(volume.transpose(2, 1, 0))
    lps = sitk.GetImageFromArray(zyx)
    lps.SetSpacing((1.2, 0.9, 2.0))
    lps.SetOrigin((10.0, -20.0, 35.0))
    sitk.WriteImage(lps, str(folder / "lps.nrrd"))
    tilted = sitk.GetImageFromArray(zyx)
    tilted.SetSpacing((1.0, 1.3, 2.2))
    tilted.SetDirection(tuple((_rotation(-30.0) @ np.diag([1.0, -1.0, -1.0])).ravel()))
    tilted.SetOrigin((-5.0, 7.0, -12.0))
    sitk.WriteImage(tilted, str(folder / "oblique_flipped.mha"))
    for path in folder.iterdir():
        paths[path.name.split(".")[0]] = path
    write_dicom_series(folder / "dicom_series", zyx, spacing=(0.9, 0.9, 2.5))
    paths["dicom_series"] = folder / "dicom_series"
    return paths
