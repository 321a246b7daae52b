"""DICOM series through SimpleITK/GDCM: choosing a series, and refusing one whose slices do not
form a regular grid.

ITK stacks a series' slices with one uniform spacing (their average) along the slice normal and
no shear. A missing slice, uneven spacing, duplicate positions, mixed orientations or a gantry tilt
therefore give a volume whose geometry is wrong without any error; :func:`read_dicom_series`
refuses such a series, or with ``allow_irregular=True`` warns (``UserWarning``) and reads it anyway.
A folder holding several series is refused with a list of them (UID, description, modality, slice
count — never a patient tag). No tag other than geometry is ever copied out of the files.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.utils import optional_import

from gdlseg.data.errors import ScanError, itk_reason, quiet_itk

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it

# Regularity, relative to the median step between slice positions along the normal:
SPACING_TOLERANCE = 0.01  # steps within 1% of the median are regular (positions are rounded decimal strings)
GAP_TOLERANCE = 0.1  # a step within 10% of k × median (k ≥ 2) is k − 1 missing slices
# Shear: the largest sideways drift of a slice position off the line along the normal, in pixels. Below
# a quarter pixel it is smaller than what resampling blurs anyway; a real gantry tilt drifts many pixels.
SHEAR_TOLERANCE_PIXELS = 0.25

_POSITION, _ORIENTATION, _DESCRIPTION, _MODALITY = "0020|0032", "0020|0037", "0008|103e", "0008|0060"


def is_dicom_series_folder(path: os.PathLike | str) -> bool:
    """True for a folder that holds at least one DICOM series SimpleITK can read."""
    if not Path(path).is_dir():
        return False
    with quiet_itk():  # GDCM warns about every non-DICOM folder it scans
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))


@dataclass(frozen=True)
class SeriesSummary:
    """What identifies a DICOM series to a user without any patient tag."""

    uid: str
    description: str
    modality: str
    slices: int

    def __str__(self) -> str:
        description = f'"{self.description}"' if self.description else "(no description)"
        return f"{self.uid}  {description}, {self.modality or 'unknown modality'}, {self.slices} slices"


def _slice_header(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader


def _tag(reader: sitk.ImageFileReader, tag: str) -> str:
    return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""


def dicom_series(folder: os.PathLike | str) -> list[SeriesSummary]:
    """Every DICOM series in ``folder`` (not its subfolders), with description, modality and slice count."""
    summaries = []
    with quiet_itk():
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
            first = _slice_header(files[0])
            summaries.append(SeriesSummary(uid, _tag(first, _DESCRIPTION), _tag(first, _MODALITY), len(files)))
    return summaries


def dicom_series_files(folder: os.PathLike | str, series_uid: str | None = None) -> list[str]:
    """The files of one series of ``folder``, in GDCM's slice order.

    Raises:
        ScanError: no series; several series and no ``series_uid`` (the message lists them and
            says to pass ``--series-uid``); an unknown ``series_uid``.
    """
    with quiet_itk():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise ScanError(folder, "no DICOM series found in this folder")
    if series_uid is None and len(uids) > 1:
        listing = "\n".join(f"  {summary}" for summary in dicom_series(folder))
        raise ScanError(
            folder, f"holds {len(uids)} DICOM series; choose one with --series-uid (series_uid):\n{listing}"
        )
    if series_uid is not None and series_uid not in uids:
        raise ScanError(folder, f"no DICOM series {series_uid}; it holds {', '.join(uids)}")
    with quiet_itk():
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid or uids[0]))


def _numbers(text: str, count: int) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in text.split("\\")], dtype=np.float64)
    except ValueError:
        return None
    return values if values.size == count else None


def series_irregularities(positions: np.ndarray, orientation: np.ndarray, pixel_spacing: float) -> list[str]:
    """What makes a stack of slices unlike one regular grid (empty when it is regular).

    Args:
        positions: ``(N, 3)`` ImagePositionPatient of the slices (mm), any order.
        orientation: ``(6,)`` ImageOrientationPatient (row and column direction cosines).
        pixel_spacing: the smaller in-plane pixel spacing (mm).

    With the slice normal ``n = row × column`` and ``d_i`` the sorted positions along ``n``, steps
    ``s_i = d_{i+1} − d_i`` and their median ``m``:

    - a step with ``|s_i / m − k| ≤ 0.1`` for an integer ``k ≥ 2`` is ``k − 1`` missing slices;
    - a step ``≈ 0`` is two slices at one position (duplicates, or several acquisitions);
    - any other step with ``|s_i − m| > 0.01 m`` is uneven spacing;
    - a slice position drifting sideways (perpendicular to ``n``) from the first one by more than a
      quarter pixel is a gantry tilt: the slices are sheared, not stacked straight, and ITK would
      misplace the last ones by that drift. The tilt angle is reported from the first and last
      positions. (A slightly oblique normal over a short stack drifts far less and is regular.)

    A missing first or last slice cannot be seen from positions and is not reported.
    """
    if len(positions) < 2:
        return []
    normal = np.cross(orientation[:3], orientation[3:])
    normal /= np.linalg.norm(normal)
    order = np.argsort(positions @ normal)
    positions = positions[order]
    along = positions @ normal
    steps = np.diff(along)
    problems = []
    duplicates = int(np.sum(steps <= 1e-3))
    if duplicates:
        problems.append(f"{duplicates} pair(s) of slices share one position (duplicates or several acquisitions)")
    distinct = steps > 1e-3
    if distinct.any():
        median = float(np.median(steps[distinct]))
        gaps, regular = [], []
        for start, step in zip(along[:-1][distinct], steps[distinct]):
            ratio = step / median
            if round(ratio) >= 2 and abs(ratio - round(ratio)) <= GAP_TOLERANCE:
                gaps.append(f"{round(ratio) - 1} after {start:.2f} mm")
            else:
                regular.append(step)
        if gaps:
            problems.append(
                f"missing slice(s): gap in the slice positions along the normal (slice spacing {median:.4g} mm; "
                f"{', '.join(gaps)})"
            )
        if regular and max(abs(step / median - 1) for step in regular) > SPACING_TOLERANCE:
            problems.append(
                f"uneven slice spacing: steps from {min(regular):.4g} to {max(regular):.4g} mm (median {median:.4g} mm)"
            )
    offsets = positions - positions[0]
    sideways = offsets - np.outer(offsets @ normal, normal)
    drift = float(np.linalg.norm(sideways, axis=1).max())
    if drift > SHEAR_TOLERANCE_PIXELS * pixel_spacing:
        last = offsets[-1]
        tilt = math.degrees(math.atan2(float(np.linalg.norm(sideways[-1])), abs(float(last @ normal))))
        problems.append(
            f"gantry tilt of {tilt:.2f} degrees (slice positions drift {drift:.3g} mm = "
            f"{drift / pixel_spacing:.3g} pixels sideways of the slice normal: the volume would be sheared)"
        )
    return problems


def dicom_geometry_problems(files: Sequence[str]) -> list[str]:
    """Irregularities of a series' slice geometry, from the headers of its ``files`` (no pixel read)."""
    positions, orientations, pixel_spacing = [], [], float("inf")
    with quiet_itk():
        for name in files:
            reader = _slice_header(name)
            pixel_spacing = min(pixel_spacing, *reader.GetSpacing()[:2])
            position = _numbers(_tag(reader, _POSITION), 3)
            orientation = _numbers(_tag(reader, _ORIENTATION), 6)
            if position is None or orientation is None:
                return [f"slice {Path(name).name} has no valid ImagePositionPatient/ImageOrientationPatient"]
            positions.append(position)
            orientations.append(orientation)
    orientations = np.array(orientations)
    if np.abs(orientations - orientations[0]).max() > 1e-4:
        return ["the slices have different orientations (ImageOrientationPatient)"]
    return series_irregularities(np.array(positions), orientations[0], pixel_spacing)


def read_dicom_series(
    folder: os.PathLike | str, series_uid: str | None = None, allow_irregular: bool = False
) -> sitk.Image:
    """Read one DICOM series from ``folder``, refusing an irregular one (see the module docstring).

    Raises:
        ScanError: no series; several and no ``series_uid`` (listed); an irregular series, unless
            ``allow_irregular`` (then a ``UserWarning``).
    """
    files = dicom_series_files(folder, series_uid)
    problems = dicom_geometry_problems(files)
    if problems:
        reason = f"irregular DICOM series: {'; '.join(problems)}."
        if not allow_irregular:
            raise ScanError(folder, reason + " Pass --allow-irregular (allow_irregular=True) to read it anyway.")
        warnings.warn(
            f"{folder}: {reason} Read anyway with one uniform slice spacing and no shear: its geometry is approximate.",
            UserWarning,
            stacklevel=2,
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    with quiet_itk():
        try:
            return reader.Execute()
        except RuntimeError as error:
            raise ScanError(folder, f"the DICOM series cannot be read: {itk_reason(error, folder)}") from error
