"""A label file with one voxel changed: the bad label value of the dataset check and class volume tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def set_first_label_voxel(label: Path, value: int) -> None:
    """Rewrite the NIfTI ``label`` with voxel ``(0, 0, 0)`` set to ``value`` (e.g. a class that does not
    exist), its affine kept."""
    image = nib.load(label)
    values = np.asarray(image.dataobj).copy()
    values[0, 0, 0] = value
    nib.save(nib.Nifti1Image(values, image.affine), label)
