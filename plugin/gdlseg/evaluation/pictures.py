"""The pictures of an evaluation: box plots of each metric per class, and overlays of the worst cases."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path

from gdlseg.evaluation.cases import index_folder
from gdlseg.evaluation.geometry import geometry_differences
from gdlseg.evaluation.plots import save_box_plots, save_overlay

Results = Mapping[str, Mapping[int, Mapping[str, float]]]  # {case: {label: {metric: value}}}
BOX_PLOTS = (
    ("dice", "Dice"),
    ("hd95_mm", "HD95 (mm)"),
    ("msd_mm", "mean surface distance (mm)"),
    ("nsd", "normalised surface Dice"),
)


def write_pictures(
    output: Path,
    results: Results,
    names: Mapping[int, str],
    matched: Mapping[str, tuple[Path, Path]],
    images: Path | None = None,
    overlays: int = 5,
) -> list[Path]:
    """``plots/box_<metric>.png`` per metric and, with ``overlays`` above 0, the overlays of that many
    worst cases (:func:`write_overlays`); returns the folders written."""
    plots = output / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for metric, label in BOX_PLOTS:
        values = {names[k]: [by_label[k][metric] for by_label in results.values()] for k in names}
        save_box_plots(values, plots / f"box_{metric}.png", label, f"{label} per class")
    folders = [plots]
    if overlays:
        folders.append(write_overlays(output, results, matched, images, overlays))
    return folders


def write_overlays(
    output: Path,
    results: Results,
    matched: Mapping[str, tuple[Path, Path]],
    images: Path | None = None,
    count: int = 5,
) -> Path:
    """``overlays/<case>.png`` for the ``count`` cases with the lowest mean Dice, on the slice where
    prediction and reference disagree most (on the scan from ``images`` when it lies on the reference's
    grid, else on the reference itself). Overlays of an earlier evaluation in the folder are removed."""
    import numpy as np
    import SimpleITK as sitk

    from gdlseg.data.readers import read_image

    folder = output / "overlays"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    scans = index_folder(images, series_folders=True) if images else {}
    ranked = sorted(
        (dice, case)
        for case, by_label in results.items()
        if not math.isnan(dice := _nanmean([values["dice"] for values in by_label.values()]))
    )
    for dice, case in ranked[:count]:
        prediction_path, reference_path = matched[case]
        reference = read_image(reference_path)
        prediction = sitk.GetArrayFromImage(read_image(prediction_path))
        labels = sitk.GetArrayFromImage(reference)
        background = (labels > 0).astype(np.float32)
        if case in scans:
            try:
                scan = read_image(scans[case])
                if not geometry_differences(scan, reference) and scan.GetNumberOfComponentsPerPixel() == 1:
                    background = sitk.GetArrayFromImage(scan).astype(np.float32)
                else:
                    print(
                        f"gdlseg evaluate: case {case}: the scan is not on the reference's grid; "
                        "overlay drawn on the reference",
                        file=sys.stderr,
                    )
            except (RuntimeError, ValueError):  # a ScanError is a ValueError
                print(
                    f"gdlseg evaluate: case {case}: the scan cannot be read; overlay drawn on the reference",
                    file=sys.stderr,
                )
        # SimpleITK arrays are (z, y, x); the plots take (x, y, z).
        background, labels, prediction = (array.T for array in (background, labels, prediction))
        if labels.ndim == 3:
            disagreement = (labels != prediction).sum(axis=(0, 1))
            axial = int(np.argmax(disagreement)) if disagreement.any() else None
        else:
            axial = None
        title = f"{case}: mean Dice {dice:.3f}"
        save_overlay(background, labels, prediction, folder / f"{case}.png", axial, title, reference.GetSpacing())
    return folder


def _nanmean(values: list[float]) -> float:
    finite = [value for value in values if not math.isnan(value)]
    return sum(finite) / len(finite) if finite else float("nan")
