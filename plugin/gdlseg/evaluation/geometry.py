"""Do two images lie on the same voxel grid? (A prediction is only comparable to its reference if so.)"""

from __future__ import annotations

import numpy as np
from monai.utils import optional_import

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it

# A thousandth of the smallest voxel side: far above the float32 rounding of NIfTI headers (~1e-5 mm at
# 500 mm from the origin), far below any real misalignment.
POSITION_TOLERANCE_VOXELS = 1e-3
DIRECTION_TOLERANCE = 1e-4  # on each direction cosine


def geometry_differences(
    first: sitk.Image, second: sitk.Image, names: tuple[str, str] = ("first", "second")
) -> list[str]:
    """What differs between the grids of two images: size, spacing, origin, direction (empty if nothing).

    Spacing and origin are compared with an absolute tolerance of :data:`POSITION_TOLERANCE_VOXELS`
    times the smallest spacing (mm), direction cosines with :data:`DIRECTION_TOLERANCE`.
    """
    a, b = names
    if first.GetDimension() != second.GetDimension():
        return [f"dimension {first.GetDimension()} ({a}) vs {second.GetDimension()} ({b})"]
    if first.GetSize() != second.GetSize():
        return [f"size {first.GetSize()} ({a}) vs {second.GetSize()} ({b})"]
    tolerance = POSITION_TOLERANCE_VOXELS * min(first.GetSpacing())
    differences = []
    for label, value_a, value_b, limit in (
        ("spacing", first.GetSpacing(), second.GetSpacing(), tolerance),
        ("origin", first.GetOrigin(), second.GetOrigin(), tolerance),
        ("direction", first.GetDirection(), second.GetDirection(), DIRECTION_TOLERANCE),
    ):
        if np.max(np.abs(np.subtract(value_a, value_b))) > limit:
            differences.append(f"{label} {_rounded(value_a)} ({a}) vs {_rounded(value_b)} ({b})")
    return differences


def require_same_geometry(first: sitk.Image, second: sitk.Image, names: tuple[str, str] = ("first", "second")) -> None:
    """Raise if the two images do not share one voxel grid.

    Raises:
        ValueError: naming every property that differs and both values.
    """
    differences = geometry_differences(first, second, names)
    if differences:
        raise ValueError(f"{names[0]} and {names[1]} lie on different voxel grids: {'; '.join(differences)}")


def _rounded(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(float(value), 5) for value in values)
