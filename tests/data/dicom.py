"""Write small DICOM series with SimpleITK for tests (patient tags included on purpose).

``positions`` replaces the slice positions of a regular grid: irregular series (missing slices,
uneven spacing, gantry tilt) are written by giving the position of every slice.
"""

from __future__ import annotations

import locale
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "PID-0042"
# A legacy export's patient values that are not valid DICOM: a dashed date (DA is YYYYMMDD), a name without
# a caret and with a newline. pydicom warns and logs with the date; highdicom logs the name, cannot parse the date.
LEGACY_BIRTH_DATE, LEGACY_NAME = "1970-01-01", "DOE JANE\n"


def write_dicom_series(
    folder: Path,
    volume: np.ndarray,
    spacing=(0.8, 0.8, 2.5),
    origin=(-40.0, -30.0, 12.0),
    direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
    series_uid: str = "1.2.826.0.1.3680043.2.1125.1.1",
    patient_name: str = PATIENT_NAME,
    patient_id: str = PATIENT_ID,
    description: str = "AX SOFT TISSUE",
    positions: Sequence[Sequence[float]] | None = None,
    prefix: str = "slice",
) -> sitk.Image:
    """Write ``volume`` (z, y, x int16) as one CT series of 2D slices; return the image it encodes
    (the regular grid; with ``positions`` the files say otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    saved_locale = locale.setlocale(locale.LC_ALL)
    image = sitk.GetImageFromArray(volume.astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    stamp = time.strftime("%Y%m%d")
    orientation = "\\".join(
        str(v) for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
    )
    for index in range(image.GetDepth()):
        slice_ = image[:, :, index]
        position = positions[index] if positions is not None else image.TransformIndexToPhysicalPoint((0, 0, index))
        for tag, value in {
            "0010|0010": patient_name,
            "0010|0020": patient_id,
            "0010|0030": "19700101",
            "0008|0060": "CT",
            "0008|0020": stamp,
            "0008|103e": description,
            "0020|000d": series_uid + ".0",
            "0020|000e": series_uid,
            "0020|0052": series_uid + ".2",  # FrameOfReferenceUID: real series have one (a DICOM SEG needs it)
            "0020|0037": orientation,
            "0020|0032": "\\".join(str(float(v)) for v in position),
            "0020|0013": str(index + 1),
            "0018|0050": str(spacing[2]),
            "0008|0018": f"{series_uid}.{index + 1}",
        }.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}_{index:03d}.dcm"))
        writer.Execute(slice_)
    # ITK's GDCM writer resets the C locale to "C": without this, later text-mode subprocess output
    # in the same test process would be decoded as ASCII.
    locale.setlocale(locale.LC_ALL, saved_locale)
    return image


def regular_positions(count: int, spacing: float = 2.5, origin=(-40.0, -30.0, 12.0)) -> list[list[float]]:
    """Axial slice positions ``origin + k · spacing · z``."""
    return [[origin[0], origin[1], origin[2] + k * spacing] for k in range(count)]


def give_legacy_patient_values(folder: Path) -> Path:
    """Rewrite every file of the series in ``folder`` with :data:`LEGACY_BIRTH_DATE` and :data:`LEGACY_NAME`."""
    for path in folder.iterdir():
        header = pydicom.dcmread(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's own warning about the date set here
            header.PatientBirthDate, header.PatientName = LEGACY_BIRTH_DATE, LEGACY_NAME
            header.save_as(path)
    return folder
