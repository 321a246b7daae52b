"""Do two images lie on the same voxel grid? (A prediction is only comparable to its reference if so.)

The rule and its tolerance are :mod:`gdlseg.data.geometry`'s, shared with the dataset checks.
"""

from __future__ import annotations

from monai.utils import optional_import

from gdlseg.data.geometry import Grid, grid_differences

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it


def geometry_differences(
    first: sitk.Image, second: sitk.Image, names: tuple[str, str] = ("first", "second")
) -> list[str]:
    """What differs between the grids of two images: dimension, size, spacing, origin, direction, each
    with both values (SimpleITK's LPS) and ``names``; empty if nothing (see :mod:`gdlseg.data.geometry`)."""
    return grid_differences(Grid.of_image(first), Grid.of_image(second), names=names)


def require_same_geometry(first: sitk.Image, second: sitk.Image, names: tuple[str, str] = ("first", "second")) -> None:
    """Raise if the two images do not share one voxel grid.

    Raises:
        ValueError: naming every property that differs and both values.
    """
    differences = geometry_differences(first, second, names)
    if differences:
        raise ValueError(f"{names[0]} and {names[1]} lie on different voxel grids: {'; '.join(differences)}")
