"""One labelled case's checks (:func:`inspect_case`): each file's header, then the case's geometry, then
each file's voxels, every problem collected. :mod:`gdlseg.data.checks` runs them over a whole datalist
(its module docstring lists the rules); :mod:`gdlseg.data.fingerprint` and the training ranges read the
voxels a case without problems hands back.

Problems name the case (its file name without extension) and the file name, never a folder path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gdlseg.data.channels import channel_files, channel_label, file_channels
from gdlseg.data.datalist import case_name
from gdlseg.data.geometry import AFFINE_TOLERANCE, Grid, grid_differences
from gdlseg.data.readers import ScanError, ScanHeader, read_array, read_header


@dataclass(frozen=True)
class Problem:
    """One defect: the case (or ``datalist``/``settings``), where in it (a file's role and name, or
    nothing when the message names the argument), and what is wrong."""

    case: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.case}: {self.where}: {self.message}" if self.where else f"{self.case}: {self.message}"


def _dimension_problem(header: ScanHeader, channels_last: bool = False) -> str | None:
    """Not 3D (a trailing axis of size 1 is a channel and allowed), or, with ``channels_last`` (a case's
    only image file), not 3D or 4D with the channels last; or a zero-size dimension."""
    shape = header.shape
    if len(shape) < 3 or any(n != 1 for n in shape[3 + int(channels_last) :]):
        if channels_last and len(shape) > 3:
            return f"is {len(shape)}D (shape {shape}); training needs a 3D scan, or a 4D one with the channels last"
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
    """A case as read by :func:`inspect_case`: its problems, its channel count once its headers pass,
    and, when it has no problem, every channel's voxels (``image``: ``(x, y, z, channels)``), the labels
    (``(x, y, z[, 1])`` as the training pipeline reads them) and channel 0's RAS affine."""

    name: str
    problems: list[Problem]
    image: np.ndarray | None = None
    labels: np.ndarray | None = None
    affine: np.ndarray | None = None
    channels: int | None = None


def _headers(paths: Sequence[str], where: Sequence[str], name: str, channels_last: bool) -> tuple[list, list[Problem]]:
    """Each file's header, or the problems of the files that cannot be read or are not 3D (4D)."""
    headers, problems = [], []
    for path, place in zip(paths, where):
        try:
            header = read_header(path)
        except ScanError as error:
            problems.append(Problem(name, place, error.reason))
            continue
        if (message := _dimension_problem(header, channels_last)) is not None:
            problems.append(Problem(name, place, message))
        headers.append(header)
    return headers, problems


def inspect_case(
    case: Mapping[str, str | Sequence[str]],
    num_classes: int | None,
    affine_tolerance: float = AFFINE_TOLERANCE,
    channel_names: Sequence[str] | None = None,
) -> CheckedCase:
    """Check one labelled case ``{"image": path or [path per channel], "label": path}`` (paths
    resolved), reading each file once: headers first, voxels only if the headers pass. Every channel
    file must lie on channel 0's grid (size, spacing, origin, direction within ``affine_tolerance``),
    and the label too. Label values are checked against ``num_classes`` unless it is None; problems
    name a channel by index and by its name in ``channel_names`` when given."""
    files = channel_files(case["image"])
    name = case_name(case["image"])
    several = len(files) > 1
    image_where = [
        f"image {channel_label(index, channel_names) + ' ' if several else ''}{Path(path).name}"
        for index, path in enumerate(files)
    ]
    label_where = f"label {Path(case['label']).name}"
    images, problems = _headers(files, image_where, name, channels_last=not several)
    labels, label_problems = _headers([case["label"]], [label_where], name, channels_last=False)
    problems += label_problems
    if problems:
        return CheckedCase(name, problems)
    image, label = images[0], labels[0]
    channels = len(files) if several else file_channels(image.shape)
    reference = Grid.from_affine(image.shape, image.affine)
    for index, other in enumerate(images[1:], start=1):
        differences = grid_differences(Grid.from_affine(other.shape, other.affine), reference, affine_tolerance)
        if differences:
            message = f"not on channel 0's grid: {'; '.join(differences)}"
            problems.append(Problem(name, image_where[index], message))
    if problems:
        return CheckedCase(name, problems, channels=channels)
    if image.shape[:3] != label.shape[:3]:
        message = f"image and label differ in shape: image {image.shape[:3]}, label {label.shape[:3]}"
        return CheckedCase(name, [Problem(name, "", message)], channels=channels)
    differences = grid_differences(
        Grid.from_affine(label.shape, label.affine), reference, affine_tolerance, ("label", "image")
    )
    if differences:
        message = f"the label does not lie on the image's voxel grid (tolerance {affine_tolerance:g} mm): " + "; ".join(
            differences
        )
        return CheckedCase(name, [Problem(name, "", message)], channels=channels)
    arrays: list[np.ndarray] = []
    checks = [(path, place, _intensity_problem) for path, place in zip(files, image_where)]
    checks.append((case["label"], label_where, lambda a: _label_problem(a, num_classes)))
    for path, place, check in checks:
        try:
            arrays.append(read_array(path)[0])
            message = check(arrays[-1])
        except ScanError as error:
            message = error.reason
        if message is not None:
            problems.append(Problem(name, place, message))
    if problems:
        return CheckedCase(name, problems, channels=channels)
    voxels = arrays[0] if arrays[0].ndim == 4 else np.stack([a.reshape(a.shape[:3]) for a in arrays[:-1]], axis=-1)
    return CheckedCase(name, [], voxels, arrays[-1], image.affine, channels)


def check_case(
    case: Mapping[str, str | Sequence[str]], num_classes: int | None, affine_tolerance: float = AFFINE_TOLERANCE
) -> list[Problem]:
    """The problems of one labelled case (see :func:`inspect_case`)."""
    return inspect_case(case, num_classes, affine_tolerance).problems
