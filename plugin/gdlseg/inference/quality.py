"""Quality flags of one segmented case, for runs nobody watches: the uncertainty score and the checks of the
scan and its prediction against the ranges of the training data (``training.json``'s ``training_ranges``,
:mod:`gdlseg.data.training_ranges`).

Flags (each ``{"code", "message", …}``, the message naming the class, axis or channel and the numbers):

- ``class_missing``: a class present in every training case is empty in the prediction (after post-processing);
- ``volume_out_of_range``: a predicted class volume (ml, ``<case>_stats.json``'s ``volume_ml``) outside
  ``[min · (1 − t_v), max · (1 + t_v)]`` of its volumes in the training cases where it is present, or a class
  never present in training predicted at all; an empty class is left to ``class_missing``;
- ``spacing_out_of_range``: the scan's voxel size along an RAS axis outside ``[min · (1 − t_s), max · (1 + t_s)]``;
- ``intensity_out_of_range``: per channel, the scan's 0.5th (99.5th) intensity percentile outside the training
  cases' range of that percentile widened by ``t_i`` times the training's intensity span (the highest 99.5th
  percentile minus the lowest 0.5th) on each side.

``t_v``, ``t_s``, ``t_i``: :class:`QualityTolerances`. An ensemble compares with the union of its members'
ranges. Without recorded ranges (a ``training.json`` written before they existed, or a training with
``check_data`` off) these flags are skipped and a note says so: never an error. The uncertainty score is
:mod:`gdlseg.inference.uncertainty`'s; no threshold flags it (no default could be justified across tasks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from monai.utils import optional_import

from gdlseg.data.fingerprint import ras_geometry
from gdlseg.data.training_ranges import INTENSITY_PERCENTILES, intensity_percentiles
from gdlseg.inference.model import TrainedModel
from gdlseg.inference.uncertainty import EntropyScore

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it

FLAG_CODES = ("class_missing", "volume_out_of_range", "spacing_out_of_range", "intensity_out_of_range")
RAS_AXES = ("R (x)", "A (y)", "S (z)")
NO_RANGES = (
    "no training ranges recorded ({why}): class_missing, volume_out_of_range, spacing_out_of_range and "
    "intensity_out_of_range were not checked"
)


@dataclass(frozen=True)
class QualityTolerances:
    """How far outside the training's range a value may lie before it is flagged (module docstring):
    ``volume`` and ``spacing`` as fractions of the range's ends, ``intensity`` as a fraction of the training's
    intensity span. Defaults: 25% (class volumes vary much between patients, and a few training cases
    understate it), 10% (a scanner's slightly different voxel size is harmless), 10%.

    Raises:
        ValueError: a negative tolerance, or a volume tolerance of 1 or more (the lower end would vanish).
    """

    volume: float = 0.25
    spacing: float = 0.1
    intensity: float = 0.1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value >= 0:
                raise ValueError(f"the {name} tolerance must be >= 0, got {value}.")
        if self.volume >= 1:
            raise ValueError(f"the volume tolerance must be below 1, got {self.volume}.")


def model_ranges(model: TrainedModel) -> tuple[dict[str, Any] | None, str | None]:
    """The training ranges to compare with (an ensemble: the union of its members'), or None and why not."""
    records = [member.training_ranges for member in model.models]
    missing = [member.checkpoint.name for member, record in zip(model.models, records) if not record]
    if missing:
        which = "its training.json" if len(records) == 1 else f"the training.json of model(s) {', '.join(missing)}"
        why = f"{which} has none: trained before gdlseg recorded them, or with check_data off"
        return None, NO_RANGES.format(why=why)
    return (records[0] if len(records) == 1 else _union(records)), None


def _union(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ranges covering every record's; ``cases`` counts each member's training cases (a case in several
    folds once per fold), so a class is present in all of them only when it is in every member's."""

    def low(values: Sequence[float | None]) -> float | None:
        return min((v for v in values if v is not None), default=None)

    def high(values: Sequence[float | None]) -> float | None:
        return max((v for v in values if v is not None), default=None)

    cases = sum(record["cases"] for record in records)
    spacings = [record["spacing_mm"] for record in records]
    classes = {}
    for name in dict.fromkeys(name for record in records for name in record["classes"]):
        entries = [record["classes"].get(name) or {} for record in records]
        present = sum(entry.get("present_cases", 0) for entry in entries)
        classes[name] = {
            "present_cases": present,
            "present_fraction": round(present / cases, 6),
            "volume_ml_min": low([entry.get("volume_ml_min") for entry in entries]),
            "volume_ml_max": high([entry.get("volume_ml_max") for entry in entries]),
        }
    channels = []
    for index, first in enumerate(records[0]["intensity"]["channels"]):
        entries = [record["intensity"]["channels"][index] for record in records]
        channel = {"channel": index, "name": first.get("name")}
        for key in ("low", "high"):
            channel[f"{key}_min"] = low([entry[f"{key}_min"] for entry in entries])
            channel[f"{key}_max"] = high([entry[f"{key}_max"] for entry in entries])
        channels.append(channel)
    return {
        "cases": cases,
        "spacing_mm": {
            "axes": "RAS",
            "min": np.min([spacing["min"] for spacing in spacings], axis=0).tolist(),
            "max": np.max([spacing["max"] for spacing in spacings], axis=0).tolist(),
        },
        "classes": classes,
        "intensity": {"percentiles": records[0]["intensity"]["percentiles"], "channels": channels},
    }


def scan_spacing(image: sitk.Image) -> list[float]:
    """The voxel size (mm) along R, A, S of a 3D SimpleITK image (as training measures it from the affine)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ direction @ np.diag(image.GetSpacing())  # LPS → RAS
    return ras_geometry(affine, image.GetSize())[0]


def scan_intensities(image: sitk.Image) -> list[list[float] | None]:
    """Per channel, the whole scan's :data:`INTENSITY_PERCENTILES` (as training measures them)."""
    array = sitk.GetArrayViewFromImage(image)  # (z, y, x[, channels]); no copy
    channels = image.GetNumberOfComponentsPerPixel()
    return [intensity_percentiles(array if channels == 1 else array[..., index]) for index in range(channels)]


def uncertainty_record(score: EntropyScore, models: int, tta: bool) -> dict[str, Any]:
    """The uncertainty score with what it was computed from (``source``: ``softmax``, ``tta`` or ``ensemble``)."""
    mirrors = " (each averaged over the 8 mirror images)" if tta else ""
    if models > 1:
        source, about = "ensemble", f"predictive entropy: of the mean softmax of {models} models{mirrors}"
    elif tta:
        source, about = "tta", "entropy of one model's softmax of its logits averaged over the 8 mirror images"
    else:
        source = "softmax"
        about = (
            "entropy of one model's softmax: how sure that model is, not how much models would disagree "
            "(less informative than with TTA or an ensemble)"
        )
    record: dict[str, Any] = {
        "score": None if score.score is None else round(score.score, 6),
        "range": [0.0, 1.0],
        "source": source,
        "about": f"mean over the voxels labelled foreground of the entropy / ln(classes); {about}",
        "models": models,
        "tta": tta,
        "foreground_voxels": score.foreground_voxels,
    }
    if score.score is None:
        record["note"] = "no voxel was labelled foreground: the score is undefined"
    return record


def case_quality(
    image: sitk.Image,
    statistics: Mapping[str, Mapping[str, Any]],
    score: EntropyScore,
    model: TrainedModel,
    tta: bool,
    tolerances: QualityTolerances | None = None,
) -> dict[str, Any]:
    """The ``quality`` entry of a case's provenance record.

    Args:
        image: the scan as segmented (its spacing and intensities are checked).
        statistics: :func:`gdlseg.inference.statistics.structure_statistics` of its final label map.
        score: the uncertainty score of its probabilities.
        model: the model (its ``training_ranges``, per member for an ensemble).
        tta: whether the mirror images were averaged.

    Returns:
        ``{"uncertainty", "flags", "notes", "tolerances", "training_cases"}``; ``training_cases`` is None when
        no ranges were recorded or they are unusable (malformed: every flag is skipped with a note, the
        case is not failed).
    """
    tolerances = tolerances or QualityTolerances()
    flags: list[dict[str, Any]] = []
    try:
        ranges, note = model_ranges(model)
        notes = [note] if note else []
        if ranges is not None:
            flags += class_flags(statistics, ranges, tolerances.volume, notes)
            flags += spacing_flags(scan_spacing(image), ranges, tolerances.spacing)
            flags += intensity_flags(scan_intensities(image), ranges, tolerances.intensity, notes)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        # ranges edited by hand, or an ensemble whose records differ in shape: the flags cannot be computed,
        # but the case's label map must still be written (the flags are advice, not the product)
        ranges, flags = None, []
        notes = [
            f"the training ranges recorded with the model are unusable ({type(error).__name__}: {error}): no flags"
        ]
    return {
        "uncertainty": uncertainty_record(score, len(model.models), tta),
        "flags": flags,
        "notes": notes,
        "tolerances": asdict(tolerances),
        "training_cases": None if ranges is None else ranges["cases"],
    }


def _number(value: float) -> str:
    return f"{value:.4g}"


def _range_flag(
    code: str,
    subject: str,
    value: float,
    unit: str,
    recorded: tuple[float, float],
    allowed: list[float],
    why: str,
    **where: Any,
) -> list[dict[str, Any]]:
    """``[flag]`` when ``value`` lies outside ``allowed`` (the training's ``recorded`` range widened as ``why``
    says), else ``[]``; ``where`` names the class, axis or channel."""
    if allowed[0] <= value <= allowed[1]:
        return []
    low, high = (_number(end) for end in recorded)
    message = (
        f"{subject} {_number(value)}{unit}, outside {low} to {high}{unit} in the training cases "
        f"({why}: {_number(allowed[0])} to {_number(allowed[1])}{unit})"
    )
    return [{"code": code, "message": message, **where, "value": value, "range": list(recorded), "allowed": allowed}]


def class_flags(
    statistics: Mapping[str, Mapping[str, Any]], ranges: Mapping[str, Any], tolerance: float, notes: list[str]
) -> list[dict[str, Any]]:
    """``class_missing`` and ``volume_out_of_range`` of the predicted classes (a class the training ranges do
    not name, e.g. renamed with ``--class-names``, is noted and not checked)."""
    flags, unknown = [], []
    for name, entry in statistics.items():
        recorded = ranges["classes"].get(name)
        if recorded is None:
            unknown.append(name)
            continue
        volume, present, cases = float(entry["volume_ml"]), recorded["present_cases"], ranges["cases"]
        if not entry["voxels"]:
            if cases and present == cases:
                message = f"class {name!r} is empty in the prediction but present in all {cases} training cases"
                flags.append({"code": "class_missing", "message": message, "class": name})
            continue
        smallest, largest = recorded["volume_ml_min"], recorded["volume_ml_max"]
        if smallest is None:
            message = f"class {name!r} has {_number(volume)} ml, but none of the {cases} training cases has it"
            flags.append({"code": "volume_out_of_range", "message": message, "class": name, "value": volume})
            continue
        allowed = [smallest * (1 - tolerance), largest * (1 + tolerance)]
        why = f"those that have it; allowed with {tolerance:.0%} tolerance"
        subject, where = f"class {name!r} has", {"class": name}
        flags += _range_flag("volume_out_of_range", subject, volume, " ml", (smallest, largest), allowed, why, **where)
    if unknown:
        notes.append(f"class(es) {', '.join(unknown)} have no training range (not named in training.json): not checked")
    return flags


def spacing_flags(spacing: Sequence[float], ranges: Mapping[str, Any], tolerance: float) -> list[dict[str, Any]]:
    """``spacing_out_of_range`` per RAS axis."""
    flags = []
    recorded = ranges["spacing_mm"]
    for axis, value, smallest, largest in zip(RAS_AXES, spacing, recorded["min"], recorded["max"]):
        allowed = [smallest * (1 - tolerance), largest * (1 + tolerance)]
        why = f"allowed with {tolerance:.0%} tolerance"
        subject = f"voxel size along {axis} is"
        flags += _range_flag(
            "spacing_out_of_range", subject, value, " mm", (smallest, largest), allowed, why, axis=axis[0]
        )
    return flags


def intensity_flags(
    percentiles: Sequence[Sequence[float] | None], ranges: Mapping[str, Any], tolerance: float, notes: list[str]
) -> list[dict[str, Any]]:
    """``intensity_out_of_range`` per channel and percentile (a channel the ranges lack is noted)."""
    flags = []
    channels = ranges["intensity"]["channels"]
    for index, values in enumerate(percentiles):
        recorded = channels[index] if index < len(channels) else None
        if values is None or recorded is None or recorded["low_min"] is None:
            notes.append(f"channel {index}: no intensity range to compare with (no finite voxel, or none recorded)")
            continue
        label = f"channel {index}" + (f" ({recorded['name']})" if recorded.get("name") else "")
        margin = tolerance * (recorded["high_max"] - recorded["low_min"])
        why = f"allowed, widened by {tolerance:.0%} of the training's intensity span"
        for key, percentile, value in zip(("low", "high"), INTENSITY_PERCENTILES, values):
            smallest, largest = recorded[f"{key}_min"], recorded[f"{key}_max"]
            subject = f"{label}: the {percentile:g}th intensity percentile is"
            allowed = [smallest - margin, largest + margin]
            where = {"channel": index, "percentile": percentile}
            flags += _range_flag(
                "intensity_out_of_range", subject, value, "", (smallest, largest), allowed, why, **where
            )
    return flags
