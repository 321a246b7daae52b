"""The training data's ranges that inference's quality flags compare a new scan with (``training.json``'s
``training_ranges``), gathered while the dataset check reads every labelled case anyway.

Per case (:func:`case_ranges`, on the voxels :func:`gdlseg.data.case_checks.inspect_case` has read):

- ``spacing_mm``: the voxel size along R, A, S (:func:`gdlseg.data.fingerprint.ras_geometry`, the order of
  ``pixdim``);
- ``class_volume_ml``: per class value ``c``, ``|{v : L(v) = c}| · |det A| / 1000`` for the label map ``L``
  and the affine ``A`` (mm³ → ml), on the scan's own grid, as inference's statistics measure a prediction;
- ``intensity``: per image channel, the :data:`INTENSITY_PERCENTILES` (0.5th and 99.5th) of the whole scan
  (:func:`intensity_percentiles`: every voxel up to :data:`MAX_INTENSITY_SAMPLES`, else a regular sub-grid).

Over the training cases (:func:`training_ranges`): the spacing's minimum and maximum per axis; per
foreground class, in how many cases it is present (at least one voxel) and the minimum and maximum of its
volume over those cases; per channel, the minimum and maximum of each percentile. Case names and paths are
not recorded.

Where they come from (:class:`CaseRangeCollector`): the training's dataset check (``check_data``) reads every
labelled case once, and the ranges are taken from those voxels: no extra read of the dataset. With
``check_data`` off nothing is read before training, so nothing is recorded (``training_ranges: null``) and
inference skips the flags that need the ranges, saying so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gdlseg.data.case_checks import CheckedCase
from gdlseg.data.fingerprint import ras_geometry

logger = logging.getLogger(__name__)

INTENSITY_PERCENTILES = (0.5, 99.5)
MAX_INTENSITY_SAMPLES = 1_000_000


def intensity_percentiles(channel: np.ndarray) -> list[float] | None:
    """The :data:`INTENSITY_PERCENTILES` of one channel's finite voxels (any array order; linear interpolation).

    Above :data:`MAX_INTENSITY_SAMPLES` voxels, the voxels of the regular sub-grid ``[::k, ::k, ::k]`` with
    ``k = ceil((n / MAX_INTENSITY_SAMPLES)^(1/3))``: the same voxels whichever the axis order, so a file read
    as ``(x, y, z)`` in training and ``(z, y, x)`` at inference gives the same values. None: no finite voxel.
    """
    step = max(1, math.ceil((channel.size / MAX_INTENSITY_SAMPLES) ** (1 / channel.ndim)))
    sample = np.asarray(channel[(slice(None, None, step),) * channel.ndim], dtype=np.float64).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return None
    return [float(value) for value in np.percentile(sample, INTENSITY_PERCENTILES)]


@dataclass(frozen=True)
class CaseRanges:
    """One case's facts (module docstring): spacing per RAS axis, volume in ml per class value (background
    first), percentiles per channel."""

    spacing_mm: list[float]
    class_volume_ml: list[float]
    intensity: list[list[float] | None]


def case_ranges(checked: CheckedCase) -> CaseRanges:
    """The facts of a case read without problems (``image`` ``(x, y, z, channels)``, ``labels``, ``affine``)."""
    labels = checked.labels.reshape(checked.labels.shape[:3])
    spacing, _ = ras_geometry(checked.affine, labels.shape)
    voxel_ml = abs(float(np.linalg.det(checked.affine[:3, :3]))) / 1000.0
    voxels = np.bincount(labels.astype(np.int64, copy=False).ravel())
    channels = [intensity_percentiles(checked.image[..., index]) for index in range(checked.image.shape[-1])]
    return CaseRanges(spacing, [float(count) * voxel_ml for count in voxels], channels)


class CaseRangeCollector(dict[str, CaseRanges]):
    """``{label path: CaseRanges}`` of the cases the dataset check read, filled while their voxels are in
    memory: pass it as :func:`gdlseg.data.checks.preflight`'s ``on_case``. Keys are the case's label path as
    :func:`gdlseg.data.datalist.resolve_case` gives it in this process (what the training split's cases hold
    too). Under torchrun each rank reads its share and then receives the other ranks' facts with the cases as
    it resolves them itself: every rank holds all, under its own paths, wherever each node mounts the data.
    """

    def __call__(self, case: Mapping[str, Any], checked: CheckedCase) -> CaseRanges:
        self[str(case["label"])] = found = case_ranges(checked)
        return found

    def receive(self, case: Mapping[str, Any], fact: CaseRanges) -> None:
        self[str(case["label"])] = fact


def training_ranges(
    checked: int | None,
    found: Mapping[str, CaseRanges],
    training_cases: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    channel_names: Sequence[str] | None = None,
) -> dict[str, Any] | None:
    """``training.json``'s ``training_ranges``: the module docstring's summary over ``training_cases`` (the
    training split, not the validation cases) of the ranges the dataset check ``found``
    (:class:`CaseRangeCollector`); None when the check read nothing (``checked``, its result, is None:
    ``check_data`` off) or none of the training cases.

    Returns:
        ``{"cases": n, "spacing_mm": {"axes": "RAS", "min": [3], "max": [3]}, "classes": {name:
        {"present_cases", "present_fraction", "volume_ml_min", "volume_ml_max"}}, "intensity": {"percentiles":
        [0.5, 99.5], "channels": [{"channel", "name", "low_min", "low_max", "high_min", "high_max"}]}}``; a
        class never present has null volumes, a channel without finite voxels null percentiles.
    """
    if checked is None:
        logger.info(
            "check_data is off: training.json records no training ranges (inference skips the flags needing them)"
        )
        return None
    cases = [found[str(case["label"])] for case in training_cases if str(case["label"]) in found]
    if len(cases) < len(training_cases):
        logger.warning("training ranges: %d of %d training cases were read", len(cases), len(training_cases))
    if not cases:
        return None
    spacings = np.array([case.spacing_mm for case in cases])
    classes = {}
    for index, name in enumerate(class_names[1:], start=1):
        volumes = [case.class_volume_ml[index] for case in cases if index < len(case.class_volume_ml)]
        present = [volume for volume in volumes if volume > 0]
        classes[name] = {
            "present_cases": len(present),
            "present_fraction": round(len(present) / len(cases), 6),
            "volume_ml_min": round(min(present), 6) if present else None,
            "volume_ml_max": round(max(present), 6) if present else None,
        }
    channels = []
    for index in range(len(cases[0].intensity)):
        values = np.array([case.intensity[index] for case in cases if case.intensity[index] is not None])
        name = channel_names[index] if channel_names and index < len(channel_names) else None
        entry: dict[str, Any] = {"channel": index, "name": name}
        for position, key in enumerate(("low", "high")):
            column = values[:, position] if values.size else None
            entry[f"{key}_min"] = None if column is None else round(float(column.min()), 6)
            entry[f"{key}_max"] = None if column is None else round(float(column.max()), 6)
        channels.append(entry)
    return {
        "cases": len(cases),
        "spacing_mm": {
            "axes": "RAS",
            "min": [round(float(v), 6) for v in spacings.min(axis=0)],
            "max": [round(float(v), 6) for v in spacings.max(axis=0)],
        },
        "classes": classes,
        "intensity": {"percentiles": list(INTENSITY_PERCENTILES), "channels": channels},
    }
