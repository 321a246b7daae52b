"""Do two voxel grids agree? One rule for every comparison of grids: a case's channels against channel 0
(dataset checks, inference and training loading), a prediction against its reference (evaluation).

Two grids agree when their sizes are equal and, within ``tolerance`` millimetres (default
:data:`AFFINE_TOLERANCE`), their spacings, their origins, and their directions' effect across one voxel
(the difference of direction cosines times the largest spacing) do. The default is far above the
float32 rounding of NIfTI headers (~1e-5 mm at 500 mm from the origin) and far below any real
misalignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

AFFINE_TOLERANCE = 1e-3  # mm


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (the spatial sizes), ``spacing`` (mm), ``origin`` (mm) and ``direction``
    (the ``d × d`` direction-cosine matrix, axis ``j`` in column ``j``, as ITK's), all in one physical
    space (RAS for affines, LPS for SimpleITK images: compare grids of one kind only)."""

    shape: tuple[int, ...]
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray

    @classmethod
    def from_affine(cls, shape: Sequence[int], affine: np.ndarray) -> Grid:
        """The grid of an ``(x, y, z[, …])`` array and its 4×4 affine (only the first three axes count)."""
        columns = np.asarray(affine, dtype=np.float64)[:3, :3]
        spacing = np.linalg.norm(columns, axis=0)
        direction = columns / np.maximum(spacing, 1e-12)
        return cls(tuple(int(n) for n in shape[:3]), spacing, np.asarray(affine, dtype=np.float64)[:3, 3], direction)

    @classmethod
    def of_image(cls, image: object) -> Grid:
        """The grid of a SimpleITK image (LPS, its own dimension)."""
        dimension = image.GetDimension()
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)
        return cls(tuple(image.GetSize()), np.asarray(image.GetSpacing()), np.asarray(image.GetOrigin()), direction)


def grid_differences(
    grid: Grid, reference: Grid, tolerance: float = AFFINE_TOLERANCE, names: tuple[str, str] | None = None
) -> list[str]:
    """What differs between two grids under the module's rule: ``size``, ``spacing``, ``origin``,
    ``direction`` (row-major), each with both values rounded to 4 decimals; empty when they agree.

    Args:
        grid, reference: the grids compared (reference second in each message).
        tolerance: mm (see the module docstring).
        names: what to call the two grids in messages (``origin (…) (prediction) vs (…) (reference)``);
            None: ``origin (…) vs (…)``.
    """

    def part(label: str, value: object, other: object) -> str:
        if names is None:
            return f"{label} {value} vs {other}"
        return f"{label} {value} ({names[0]}) vs {other} ({names[1]})"

    if len(grid.shape) != len(reference.shape):
        return [part("dimension", len(grid.shape), len(reference.shape))]
    differences = []
    if grid.shape != reference.shape:
        differences.append(part("size", grid.shape, reference.shape))
    if np.abs(grid.spacing - reference.spacing).max() > tolerance:
        differences.append(part("spacing", _rounded(grid.spacing), _rounded(reference.spacing)))
    if np.abs(grid.origin - reference.origin).max() > tolerance:
        differences.append(part("origin", _rounded(grid.origin), _rounded(reference.origin)))
    turn = np.abs(grid.direction - reference.direction).max() * float(max(grid.spacing.max(), reference.spacing.max()))
    if turn > tolerance:
        differences.append(part("direction", _rounded(grid.direction.ravel()), _rounded(reference.direction.ravel())))
    return differences


def _rounded(values: np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(value), 4) + 0.0 for value in values)  # + 0.0: no -0.0
