"""Dataset checks: every defect of a labelled dataset found in one pass, before any training.

Training runs :func:`preflight` before its first epoch, before anything is built or written
(``training_setup`` in the bundle; the setting ``check_data: false`` leaves only the class settings
checked), and ``gdlseg check-data`` runs :func:`check_dataset`. Both read every labelled case of the
datalist (its ``"training"`` and ``"validation"`` lists) the way the training pipeline will, and
collect every problem instead of stopping at the first:

- the settings: ``num_classes`` an integer >= 2, ``class_names`` one per class,
  ``class_weights`` ``auto``, ``none`` or ``num_classes`` finite numbers >= 0;
- the datalist: missing, not JSON, no training case, an entry without image or label;
- each file, from its header: missing, unreadable, truncated or corrupt (NIfTI verified end to
  end), a DICOM folder with several series or irregular slices, not 3D (a trailing dimension of
  size 1 is a channel and allowed), a zero-size dimension;
- each case: image and label of different shapes, or affines differing by more than
  ``affine_tolerance`` mm in any entry (the label would not lie on the image's grid);
- each file's voxels (only when its header passed): NaN or infinite intensities in the image;
  label values that are negative, not integers, or >= ``num_classes``.

A scan smaller than ``roi_size`` is not a problem: the training pipeline pads it.

Problems name the case (its file name without extension) and the file name or argument, never a
folder path, so that they can be logged anywhere.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gdlseg.data.class_weights import validate_class_weights
from gdlseg.data.datalist import case_name, read_datalist, resolve_case
from gdlseg.data.readers import ScanError, ScanHeader, read_array, read_header
from gdlseg.settings import switch

logger = logging.getLogger(__name__)

AFFINE_TOLERANCE = 1e-3  # mm; NIfTI stores affines in float32 (~1e-5 mm at 100 mm)
LABELLED_LISTS = ("training", "validation")


@dataclass(frozen=True)
class Problem:
    """One defect: the case (or ``datalist``/``settings``), where in it (a file's role and name, or
    nothing when the message names the argument), and what is wrong."""

    case: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.case}: {self.where}: {self.message}" if self.where else f"{self.case}: {self.message}"


class DatasetError(ValueError):
    """The dataset has problems; the message lists every one, ``problems`` holds them."""

    def __init__(self, problems: Sequence[Problem], cases: int) -> None:
        self.problems = list(problems)
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        scope = f" in {cases} case(s)" if cases else ""
        super().__init__(
            f"the dataset check found {len(self.problems)} problem(s){scope}; nothing was trained:\n"
            f"{listing}\nFix them (gdlseg check-data repeats this check), "
            "or set check_data=false to skip the case checks."
        )


def _num_classes_problem(num_classes: object) -> str | None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        return f"num_classes must be an integer >= 2 (background and at least one class), got {num_classes!r}"
    return None


def check_settings(
    num_classes: int, class_names: Sequence[str] | None = None, class_weights: str | Sequence[float] | None = None
) -> list[Problem]:
    """Problems of the class settings, each message naming its argument."""
    if (message := _num_classes_problem(num_classes)) is not None:
        return [Problem("settings", "", message)]
    problems = []
    if class_names is not None:
        names = [class_names] if isinstance(class_names, str) else list(class_names)
        if len(names) != num_classes:
            message = f"class_names has {len(names)} name(s) {names} but num_classes is {num_classes}"
            problems.append(Problem("settings", "", message))
        elif len(set(names)) != len(names):
            problems.append(Problem("settings", "", f"class_names has duplicate names: {names}"))
    if class_weights is not None:
        try:
            validate_class_weights(class_weights, num_classes)
        except ValueError as error:
            problems.append(Problem("settings", "", str(error).rstrip(".")))
    return problems


def labelled_cases(datalist: os.PathLike | str, dataset_dir: os.PathLike | str) -> tuple[list[dict], list[Problem]]:
    """The datalist's labelled cases (paths resolved), and the problems of the datalist itself."""
    path = Path(datalist)
    try:
        content = read_datalist(path)
    except ValueError as error:
        return [], [Problem("datalist", "", str(error).replace(str(path), path.name).rstrip("."))]
    cases, problems = [], []
    for part in LABELLED_LISTS:
        entries = content.get(part) or []
        if not isinstance(entries, list):
            problems.append(Problem("datalist", path.name, f'"{part}" is not a list'))
            continue
        for index, entry in enumerate(entries):
            missing = [key for key in ("image", "label") if not (isinstance(entry, dict) and entry.get(key))]
            if missing:
                problems.append(Problem("datalist", path.name, f"{part}[{index}] has no {' and no '.join(missing)}"))
            else:
                cases.append(resolve_case(entry, dataset_dir))
    return cases, problems


def _dimension_problem(header: ScanHeader) -> str | None:
    shape = header.shape
    if len(shape) < 3 or any(n != 1 for n in shape[3:]):
        return f"is {len(shape)}D (shape {shape}); training needs a 3D scan (one channel)"
    if 0 in shape:
        return f"has a zero-size dimension (shape {shape})"
    return None


def _intensity_problem(image: np.ndarray) -> str | None:
    if not np.issubdtype(image.dtype, np.floating) or np.isfinite(image).all():
        return None
    nan, infinite = int(np.isnan(image).sum()), int(np.isinf(image).sum())
    return f"{nan} NaN and {infinite} infinite intensities"


def _label_problem(labels: np.ndarray, num_classes: int | None) -> str | None:
    """Non-integer, negative or >= ``num_classes`` values (``None``: the count is unknown, not checked)."""
    if np.issubdtype(labels.dtype, np.floating):
        fractional = labels != np.round(labels)  # NaN != NaN: NaN counts as non-integer
        if fractional.any():
            examples = ", ".join(f"{v:g}" for v in np.unique(labels[fractional])[:3])
            return f"{int(fractional.sum())} non-integer label values (e.g. {examples})"
    upper = np.inf if num_classes is None else num_classes
    if labels.min() >= 0 and labels.max() < upper:
        return None
    outside = np.unique(labels[(labels < 0) | (labels >= upper)])
    shown = ", ".join(f"{v:g}" for v in outside[:5]) + (", ..." if outside.size > 5 else "")
    if num_classes is None:
        return f"negative label values {shown}"
    return f"label values {shown} outside [0, {num_classes}) (num_classes={num_classes})"


@dataclass
class CheckedCase:
    """A case as read by :func:`inspect_case`: its problems and, when it has none, its voxels
    (``(x, y, z[, 1])`` arrays as the training pipeline reads them) and the image's RAS affine."""

    name: str
    problems: list[Problem]
    image: np.ndarray | None = None
    labels: np.ndarray | None = None
    affine: np.ndarray | None = None


def inspect_case(
    case: Mapping[str, str], num_classes: int | None, affine_tolerance: float = AFFINE_TOLERANCE
) -> CheckedCase:
    """Check one labelled case ``{"image": path, "label": path}`` (paths resolved), reading each
    file once: headers first, voxels only if the headers pass. Label values are checked against
    ``num_classes`` unless it is None."""
    name = case_name(case["image"])
    where = {key: f"{key} {Path(case[key]).name}" for key in ("image", "label")}
    problems: list[Problem] = []
    headers: dict[str, ScanHeader] = {}
    for key in ("image", "label"):
        try:
            headers[key] = read_header(case[key])
        except ScanError as error:
            problems.append(Problem(name, where[key], error.reason))
            continue
        if (message := _dimension_problem(headers[key])) is not None:
            problems.append(Problem(name, where[key], message))
    if problems:
        return CheckedCase(name, problems)
    image, label = headers["image"], headers["label"]
    if image.shape[:3] != label.shape[:3]:
        message = f"image and label differ in shape: image {image.shape[:3]}, label {label.shape[:3]}"
        return CheckedCase(name, [Problem(name, "", message)])
    difference = float(np.abs(image.affine - label.affine).max())
    if difference > affine_tolerance:
        message = (
            f"image and label affines differ by up to {difference:.3g} mm (tolerance {affine_tolerance:g} mm): "
            "the label does not lie on the image's voxel grid"
        )
        return CheckedCase(name, [Problem(name, "", message)])
    arrays: dict[str, np.ndarray] = {}
    for key, check in (("image", _intensity_problem), ("label", lambda a: _label_problem(a, num_classes))):
        try:
            arrays[key] = read_array(case[key])[0]
            message = check(arrays[key])
        except ScanError as error:
            message = error.reason
        if message is not None:
            problems.append(Problem(name, where[key], message))
    if problems:
        return CheckedCase(name, problems)
    return CheckedCase(name, [], arrays["image"], arrays["label"], image.affine)


def check_case(
    case: Mapping[str, str], num_classes: int | None, affine_tolerance: float = AFFINE_TOLERANCE
) -> list[Problem]:
    """The problems of one labelled case (see :func:`inspect_case`)."""
    return inspect_case(case, num_classes, affine_tolerance).problems


def _check(
    datalist: os.PathLike | str,
    dataset_dir: os.PathLike | str,
    num_classes: int,
    class_names: Sequence[str] | None,
    class_weights: str | Sequence[float] | None,
    affine_tolerance: float,
    progress: bool,
) -> tuple[list[Problem], int]:
    problems = check_settings(num_classes, class_names, class_weights)
    cases, datalist_problems = labelled_cases(datalist, dataset_dir)
    problems += datalist_problems
    known_classes = num_classes if _num_classes_problem(num_classes) is None else None
    for case in tqdm(cases, desc="check-data", unit="case", disable=None if progress else True):
        problems += check_case(case, known_classes, affine_tolerance)
    return problems, len(cases)


def check_dataset(
    datalist: os.PathLike | str,
    dataset_dir: os.PathLike | str,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    class_weights: str | Sequence[float] | None = None,
    affine_tolerance: float = AFFINE_TOLERANCE,
    progress: bool = False,
) -> list[Problem]:
    """Every problem of the settings, the datalist and its labelled cases (see the module docstring).

    Args:
        progress: show a progress bar over the cases (on stderr, when it is a terminal).
    """
    return _check(datalist, dataset_dir, num_classes, class_names, class_weights, affine_tolerance, progress)[0]


def require_valid_dataset(
    datalist: os.PathLike | str,
    dataset_dir: os.PathLike | str,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    class_weights: str | Sequence[float] | None = None,
    affine_tolerance: float = AFFINE_TOLERANCE,
) -> int:
    """:func:`check_dataset`, raising if anything is wrong; returns the number of cases checked.

    Raises:
        DatasetError: listing every problem found.
    """
    settings = (num_classes, class_names, class_weights, affine_tolerance, False)
    problems, cases = _check(datalist, dataset_dir, *settings)
    if problems:
        error = DatasetError(problems, cases)
        logger.error("%s", error)  # stands apart from the traceback a bundle run prints around the exception
        raise error
    logger.info("dataset check: %d labelled case(s), no problem found", cases)
    return cases


def preflight(
    check_data: bool | str,
    datalist: os.PathLike | str,
    dataset_dir: os.PathLike | str,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    class_weights: str | Sequence[float] | None = None,
    affine_tolerance: float = AFFINE_TOLERANCE,
) -> int | None:
    """The training's check (bundle ``training_setup``): :func:`require_valid_dataset`, or with the
    ``check_data`` setting off only the (instant) class settings check. Returns the number of cases
    checked, None when they were skipped.

    Raises:
        DatasetError: listing every problem found.
    """
    if not switch(check_data, "check_data"):
        if problems := check_settings(num_classes, class_names, class_weights):
            raise DatasetError(problems, 0)
        logger.warning("check_data is off: the cases are not checked before training")
        return None
    return require_valid_dataset(datalist, dataset_dir, num_classes, class_names, class_weights, affine_tolerance)
