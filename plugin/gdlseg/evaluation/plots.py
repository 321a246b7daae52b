"""Pictures for people: class-volume bars, label overlays, per-class box plots (matplotlib, Agg).

Every picture is written atomically (a reader never sees half a PNG). Arrays are in MONAI's ``(x, y, z)``
index order; a slice ``[:, :, z]`` is drawn with ``x`` to the right and ``y`` upwards.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from gdlseg.data.atomic import atomic_path


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: os.PathLike | str) -> str:
    """Lay out, write atomically and close a matplotlib figure; return the path."""
    plt = pyplot()
    try:
        figure.tight_layout()
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=100)
    finally:
        plt.close(figure)
    return str(path)


def save_class_distribution(volumes: Sequence[int], class_names: Sequence[str], path: os.PathLike | str) -> str:
    """Bar chart (log scale) of the training labels' class volumes."""
    figure, axis = pyplot().subplots(figsize=(6, 3.5))
    axis.bar(list(class_names), np.maximum(np.asarray(volumes, dtype=float), 1))
    axis.set_yscale("log")
    axis.set_ylabel("voxels in training labels")
    axis.set_title("Class volumes")
    return save_figure(figure, path)


def most_foreground_slice(labels: np.ndarray) -> int:
    """The index along the last axis of the slice holding the most non-zero voxels (the middle if none)."""
    return int(np.argmax((labels > 0).sum(axis=(0, 1)))) if labels.any() else labels.shape[2] // 2


def save_overlay(
    image: np.ndarray,
    reference: np.ndarray,
    prediction: np.ndarray,
    path: os.PathLike | str,
    axial: int | None = None,
    title: str = "",
    spacing: tuple[float, ...] | None = None,
) -> str:
    """One slice of ``image`` with the reference and the predicted labels side by side.

    Args:
        image, reference, prediction: ``(x, y, z)`` arrays (or ``(x, y)``) of one case.
        path: the PNG to write.
        axial: the ``z`` index to draw; None → :func:`most_foreground_slice` of the reference.
        title: a heading above both panels (e.g. the case name and its Dice).
        spacing: voxel size ``(x, y[, z])`` in mm, to draw voxels with their true aspect ratio.
    """
    image, reference, prediction = (
        np.asarray(a)[..., None] if np.ndim(a) == 2 else np.asarray(a) for a in (image, reference, prediction)
    )
    axial = most_foreground_slice(reference) if axial is None else int(axial)
    aspect = 1.0 if spacing is None else float(spacing[1]) / float(spacing[0])
    figure, axes = pyplot().subplots(1, 2, figsize=(8, 4.3 if title else 4))
    for axis, labels, name in ((axes[0], reference, "reference"), (axes[1], prediction, "prediction")):
        axis.imshow(image[:, :, axial].T, cmap="gray", origin="lower", aspect=aspect)
        masked = np.ma.masked_where(labels[:, :, axial] == 0, labels[:, :, axial])
        axis.imshow(
            masked.T, cmap="tab10", alpha=0.5, origin="lower", vmin=0, vmax=9, interpolation="nearest", aspect=aspect
        )
        axis.set_title(f"{name}, slice {axial}")
        axis.axis("off")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def save_box_plots(
    values_by_class: Mapping[str, Sequence[float]], path: os.PathLike | str, ylabel: str, title: str = ""
) -> str:
    """One box (median, quartiles, 1.5 IQR whiskers, outliers) per class of its finite values, with the
    number of cases under each box; classes without a finite value get an empty slot."""
    names = list(values_by_class)
    finite = [np.asarray([v for v in values_by_class[name] if np.isfinite(v)], dtype=float) for name in names]
    figure, axis = pyplot().subplots(figsize=(max(4.0, 1.2 * len(names) + 2), 4))
    positions = [i + 1 for i, values in enumerate(finite) if values.size]
    if positions:
        axis.boxplot([values for values in finite if values.size], positions=positions, widths=0.6)
    axis.set_xticks(range(1, len(names) + 1), [f"{name}\nn={values.size}" for name, values in zip(names, finite)])
    axis.set_xlim(0.4, len(names) + 0.6)
    axis.set_ylabel(ylabel)
    axis.set_title(title or ylabel)
    axis.grid(axis="y", alpha=0.3)
    return save_figure(figure, path)
