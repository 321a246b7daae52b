"""Dataset fingerprint (``gdlseg analyze``): spacings, sizes, intensities and class volumes of every
labelled case, and the bundle settings they suggest.

Every case is read once, the way the training pipeline reads it, and checked as in
:mod:`gdlseg.data.checks`; a case with a problem is left out and listed with its problems.
Spacings and sizes are given per RAS axis (the order of ``pixdim`` and ``roi_size`` after the
pipeline's ``Orientationd(RAS)``), not per voxel index: an LPS or axially stored scan has the same
RAS spacing as its RAS copy.

Suggestions:

- ``pixdim`` (nnU-Net v2's rule): the median spacing per axis; but if the coarsest axis of that
  median is more than 3× coarser than the finest other axis (anisotropic spacing) and has fewer
  than a third as many voxels as the smallest other axis, that axis gets the 10th percentile of
  its spacings instead (no finer than the other axes), so that thin-slice cases are not
  downsampled to the coarsest slices of the dataset.
- ``class_weights``: the ``auto`` formula of :mod:`gdlseg.data.class_weights` on the class volumes
  of all labelled cases (training gives the same formula its training split only).
- ``intensity``: ``ct`` when the datalist's ``modality`` says CT, else ``mr``; one per channel when the
  datalist names several channels (``channel_names`` or ``modality``), which the fingerprint lists. No ``ct_window`` is
  suggested: the foreground's 0.5–99.5th percentiles (nnU-Net's clipping range, reported under
  ``intensity_foreground``) would make a bad one here, because the ``ct`` preset maps the window
  to [0, 1] and the pipeline then crops to voxels above 0, so a window that starts above the body's
  intensity would crop every scan to its labelled organs.

Foreground intensities are pooled from up to ``samples_per_case`` voxels drawn (seeded) from each
case's labelled voxels: ``intensity_foreground_by_channel`` (per case and pooled) has one entry per
channel, ``intensity_foreground`` is channel 0's. Case names only, never paths.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import nibabel as nib
import numpy as np
from tqdm import tqdm

from gdlseg.data.case_checks import inspect_case
from gdlseg.data.channels import channel_names
from gdlseg.data.checks import AFFINE_TOLERANCE, labelled_cases
from gdlseg.data.class_weights import volume_class_weights
from gdlseg.data.datalist import datalist_fingerprint, read_datalist

ANISOTROPY = 3.0
PERCENTILES = (0.5, 99.5)


def ras_geometry(affine: np.ndarray, shape: Sequence[int]) -> tuple[list[float], list[int]]:
    """Voxel spacing (mm) and size along R, A, S of a scan with RAS ``affine`` and voxel ``shape``."""
    columns = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.sqrt((columns**2).sum(axis=0))
    axes = nib.orientations.io_orientation(affine)[:, 0].astype(int)  # RAS axis closest to each voxel axis
    ras_spacing, ras_shape = [0.0] * 3, [0] * 3
    for voxel_axis, ras_axis in enumerate(axes):
        ras_spacing[ras_axis] = float(spacing[voxel_axis])
        ras_shape[ras_axis] = int(shape[voxel_axis])
    return ras_spacing, ras_shape


def suggest_pixdim(spacings: np.ndarray, shapes: np.ndarray) -> list[float]:
    """nnU-Net v2's target spacing (see the module docstring) of ``(N, 3)`` spacings and sizes."""
    target = np.percentile(spacings, 50, axis=0)
    median_shape = np.percentile(shapes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [axis for axis in range(3) if axis != worst]
    anisotropic_spacing = target[worst] > ANISOTROPY * max(target[others])
    anisotropic_voxels = median_shape[worst] * ANISOTROPY < min(median_shape[others])
    if anisotropic_spacing and anisotropic_voxels:
        target[worst] = max(float(np.percentile(spacings[:, worst], 10)), float(max(target[others])))
    return [round(float(v), 4) for v in target]


def _summary(values: np.ndarray) -> dict:
    """Median, min and max per column (whole numbers as ints)."""

    def plain(row: np.ndarray) -> list:
        return [int(v) if float(v).is_integer() else round(float(v), 4) for v in row]

    return {
        "median": plain(np.median(values, axis=0)),
        "min": plain(values.min(axis=0)),
        "max": plain(values.max(axis=0)),
    }


def _intensity(values: np.ndarray) -> dict:
    if values.size == 0:
        return {}
    low, high = np.percentile(values, PERCENTILES)
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "percentile_00_5": float(low),
        "percentile_99_5": float(high),
    }


def _class_names(content: dict, class_names: Sequence[str] | None) -> list[str] | None:
    if class_names:
        return list(class_names)
    labels = content.get("labels")
    if isinstance(labels, dict) and labels:
        return [str(labels[key]) for key in sorted(labels, key=lambda k: int(k))]
    return None


def _is_ct(content: dict) -> bool:
    modality = content.get("modality")
    values = modality.values() if isinstance(modality, dict) else [modality]
    return any(str(value).strip().upper() == "CT" for value in values)


def _suggested_intensity(content: dict) -> str | list[str]:
    """``ct`` or ``mr`` (see the module docstring); one per channel for a datalist naming several."""
    names = channel_names(content)
    if names is None or len(names) == 1:
        return "ct" if _is_ct(content) else "mr"
    return ["ct" if name.strip().upper() == "CT" else "mr" for name in names]


def dataset_fingerprint(
    datalist: os.PathLike | str,
    dataset_dir: os.PathLike | str,
    class_names: Sequence[str] | None = None,
    max_ratio: float = 10.0,
    samples_per_case: int = 10000,
    seed: int = 0,
    affine_tolerance: float = AFFINE_TOLERANCE,
    progress: bool = False,
) -> dict:
    """The fingerprint of the datalist's labelled cases, ready for JSON (see the module docstring).

    Args:
        class_names: one per class, background first; default: the datalist's ``"labels"``, else
            ``class_<k>`` for every label value found (then values are not range-checked).
        max_ratio: the clip of the suggested class weights.

    Returns:
        A dict with ``cases`` (per case: shape and spacing per RAS axis, foreground intensity
        statistics, class voxels and millilitres), the dataset's summaries, ``suggested`` settings
        and ``failed_cases`` (case and problems of each case left out).

    Raises:
        ValueError: the datalist cannot be used, or no case could be read.
    """
    content = read_datalist(datalist)
    names = _class_names(content, class_names)
    cases, datalist_problems = labelled_cases(datalist, dataset_dir)
    if datalist_problems:
        raise ValueError("; ".join(str(problem) for problem in datalist_problems))
    rows, failed, samples, counts = [], [], [], []
    for index, case in enumerate(tqdm(cases, desc="analyze", unit="case", disable=None if progress else True)):
        checked = inspect_case(case, len(names) if names else None, affine_tolerance)
        if checked.problems:
            failed.append({"case": checked.name, "problems": [str(p) for p in checked.problems]})
            continue
        if rows and (checked.channels or 1) != rows[0]["channels"]:
            first, count = rows[0], checked.channels or 1
            problem = f"{checked.name}: has {count} channel(s), case {first['case']} has {first['channels']}"
            failed.append({"case": checked.name, "problems": [problem]})
            continue
        labels = checked.labels.reshape(checked.labels.shape[:3]).astype(np.int64)
        image = checked.image  # (x, y, z, channels)
        spacing, shape = ras_geometry(checked.affine, labels.shape)
        voxel_ml = abs(float(np.linalg.det(checked.affine[:3, :3]))) / 1000.0
        class_voxels = np.bincount(labels.ravel())
        foreground = image[labels > 0].astype(np.float64)  # (voxels, channels)
        rng = np.random.default_rng(seed + index)
        drawn = rng.choice(len(foreground), min(samples_per_case, len(foreground)), replace=False)
        samples.append(foreground[drawn])
        by_channel = [_intensity(foreground[:, channel]) for channel in range(foreground.shape[1])]
        counts.append(class_voxels)
        rows.append(
            {
                "case": checked.name,
                "channels": checked.channels or 1,
                "shape": shape,
                "spacing_mm": [round(v, 5) for v in spacing],
                "intensity_foreground": by_channel[0],
                "intensity_foreground_by_channel": by_channel,
                "class_voxels": class_voxels.tolist(),
                "class_volume_ml": (class_voxels * voxel_ml).round(3).tolist(),
            }
        )
    if not rows:
        raise ValueError(f"no case could be analysed ({len(failed)} failed): {failed[:3]}")
    num_classes = max(len(names) if names else 0, max(len(c) for c in counts))
    names = names or [f"class_{k}" for k in range(num_classes)]
    for row in rows:
        row["class_voxels"] += [0] * (num_classes - len(row["class_voxels"]))
        row["class_volume_ml"] += [0.0] * (num_classes - len(row["class_volume_ml"]))
    totals = np.sum([row["class_voxels"] for row in rows], axis=0)
    spacings = np.array([row["spacing_mm"] for row in rows])
    shapes = np.array([row["shape"] for row in rows])
    pixdim = suggest_pixdim(spacings, shapes)
    pooled_samples = np.concatenate(samples)
    pooled = [_intensity(pooled_samples[:, channel]) for channel in range(pooled_samples.shape[1])]
    suggested: dict = {
        "pixdim": pixdim,
        "shape_at_pixdim": _summary(np.round(shapes * spacings / np.array(pixdim)).astype(int)),
        "class_weights": [round(w, 4) for w in volume_class_weights(totals, max_ratio)],
        "class_weight_max_ratio": max_ratio,
        "intensity": _suggested_intensity(content),
    }
    return {
        "dataset": {"name": content.get("name"), **datalist_fingerprint(datalist)},
        "cases_analysed": len(rows),
        "failed_cases": failed,
        "class_names": names,
        "channel_names": channel_names(content),
        "in_channels": rows[0]["channels"],
        "axes": "RAS (the order of pixdim and roi_size)",
        "spacing_mm": _summary(spacings),
        "shape": _summary(shapes),
        "intensity_foreground": pooled[0],
        "intensity_foreground_by_channel": pooled,
        "class_voxels": totals.tolist(),
        "class_fraction": (totals / totals.sum()).round(8).tolist(),
        "suggested": suggested,
        "cases": rows,
    }


def train_options(fingerprint: dict) -> list[str]:
    """The ``gdlseg train`` options that apply a fingerprint's suggestions."""
    suggested = fingerprint["suggested"]
    options = ["--pixdim", *(f"{v:g}" for v in suggested["pixdim"])]
    options += ["--classes", *fingerprint["class_names"]]
    options += ["--class-weights", *(f"{w:g}" for w in suggested["class_weights"])]
    intensity = suggested["intensity"]
    options += ["--intensity", *([intensity] if isinstance(intensity, str) else intensity)]
    return options
