"""Write small DICOM series with SimpleITK for tests (patient tags included on purpose)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def write_dicom_series(
    folder: Path,
    volume: np.ndarray,
    spacing=(0.8, 0.8, 2.5),
    origin=(-40.0, -30.0, 12.0),
    direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
    series_uid: str = "1.2.826.0.1.3680043.2.1125.1.1",
    patient_name: str = "DOE^JANE",
    patient_id: str = "PID-0042",
) -> sitk.Image:
    """Write ``volume`` (z, y, x int16) as one CT series of 2D slices; return the image it encodes."""
    folder.mkdir(parents=True, exist_ok=True)
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
        for tag, value in {
            "0010|0010": patient_name,
            "0010|0020": patient_id,
            "0008|0060": "CT",
            "0008|0020": stamp,
            "0020|000d": series_uid + ".0",
            "0020|000e": series_uid,
            "0020|0037": orientation,
            "0020|0032": "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, index))),
            "0020|0013": str(index + 1),
            "0018|0050": str(spacing[2]),
            "0008|0018": f"{series_uid}.{index + 1}",
        }.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{index:03d}.dcm"))
        writer.Execute(slice_)
    return image
