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
- each case: image and label of different shapes, or a label whose spacing, origin or direction differs
  from the image's (channel 0's) by more than ``affine_tolerance`` mm (``data/geometry.py``'s rule, the
  one the channels are checked by: the label would not lie on the image's grid);
- each file's voxels (only when its header passed): NaN or infinite intensities in the image;
  label values that are negative, not integers, or >= ``num_classes``.

A scan smaller than ``roi_size`` is not a problem: the training pipeline pads it. The checks of one
case (headers, geometry, voxels) are :mod:`gdlseg.data.case_checks`; this module runs them over the
datalist, with the settings and datalist checks.

Under torchrun (an initialised process group) the training's check reads every case once in all:
each rank inspects its :func:`~gdlseg.data.distributed.validation_share` of the cases, the ranks
gather their findings in case order, and every rank reaches the verdict one process would; a failed
check stops every rank, its problems printed once, by rank 0, and so does an error while a rank reads
its share.

Problems name the case (its file name without extension) and the file name or argument, never a
folder path, so that they can be logged anywhere.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from gdlseg.data.case_checks import CheckedCase, Problem, inspect_case
from gdlseg.data.channel_checks import ChannelSettings, channel_count_problems
from gdlseg.data.channels import intensity_presets
from gdlseg.data.class_weights import validate_class_weights
from gdlseg.data.datalist import dataset_channel_names, read_datalist, resolve_case
from gdlseg.data.distributed import (
    Ranks,
    gather_in_order,
    process_ranks,
    run_on_share,
    stop_every_rank,
    validation_share,
)
from gdlseg.data.geometry import AFFINE_TOLERANCE
from gdlseg.settings import switch

logger = logging.getLogger(__name__)

LABELLED_LISTS = ("training", "validation")


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
    num_classes: int,
    class_names: Sequence[str] | None = None,
    class_weights: str | Sequence[float] | None = None,
    intensity: str | Sequence[str] | None = None,
    in_channels: int | None = None,
    channel_names: Sequence[str] | None = None,
) -> list[Problem]:
    """Problems of the class and channel settings, each message naming its argument: ``intensity`` one
    preset or one per channel (``in_channels``), ``in_channels`` the number of the dataset's
    ``channel_names`` when it names them."""
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
    if in_channels is not None and channel_names is not None and len(channel_names) != in_channels:
        message = f"in_channels is {in_channels} but the datalist names {len(channel_names)} channel(s) {channel_names}"
        problems.append(Problem("settings", "", message))
    if intensity is not None:
        channels = in_channels if in_channels is not None else (len(channel_names) if channel_names else None)
        try:
            intensity_presets(intensity, channels)
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


class CaseCallback(Protocol):
    """What the dataset check hands each case it read without problems, while the voxels are in memory.

    ``callback(case, checked)`` returns a small picklable fact about the case (the resolved case, what was
    read); once every rank has checked its share, ``receive(case, fact)`` is called on every rank for every
    case's fact, in the cases' order, with ``case`` as this process resolved it (one process: its own
    facts, again). So each process ends up with the facts of all cases, keyed as it sees them, even when
    the nodes mount the dataset at different paths.
    """

    def __call__(self, case: Mapping[str, object], checked: CheckedCase) -> object: ...

    def receive(self, case: Mapping[str, object], fact: object) -> None: ...


def _check(
    datalist: os.PathLike | str,
    dataset_dir: os.PathLike | str,
    num_classes: int,
    class_names: Sequence[str] | None,
    class_weights: str | Sequence[float] | None,
    affine_tolerance: float,
    progress: bool,
    channels: ChannelSettings,
    ranks: Ranks,
    on_case: CaseCallback | None = None,
) -> tuple[list[Problem], int]:
    """Every problem and the number of labelled cases; with several ``ranks`` (a collective) each
    inspects its share of the cases and all get the whole list, in the order one process finds it. An
    error while a rank reads its share (or in ``on_case``) stops every rank, rank 0 printing it
    (:func:`~gdlseg.data.distributed.run_on_share`)."""
    names = dataset_channel_names(datalist)
    problems = check_settings(num_classes, class_names, class_weights, channels.intensity, channels.in_channels, names)
    cases, datalist_problems = labelled_cases(datalist, dataset_dir)
    problems += datalist_problems
    known_classes = num_classes if _num_classes_problem(num_classes) is None else None

    def inspect_share() -> list[tuple]:
        found = []
        share = validation_share(cases, ranks)
        for case in tqdm(share, desc="check-data", unit="case", disable=None if progress else True):
            inspected = inspect_case(case, known_classes, affine_tolerance, names)  # the voxels are let go
            fact = on_case(case, inspected) if on_case is not None and not inspected.problems else None
            count = None if inspected.channels is None else (inspected.name, inspected.channels)
            found.append((inspected.problems, count, fact))
        return found

    found = gather_in_order(run_on_share(inspect_share, "the dataset check could not read a case", ranks), ranks)
    problems += [problem for case_problems, _, _ in found for problem in case_problems]
    counts = [count for _, count, _ in found if count is not None]
    for case, (_, _, fact) in zip(cases, found, strict=True):
        if fact is not None:
            on_case.receive(case, fact)
    problems += [Problem(*problem) for problem in channel_count_problems(counts, channels, names)]
    return problems, len(cases)


def check_dataset(
    datalist: os.PathLike | str,
    dataset_dir: os.PathLike | str,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    class_weights: str | Sequence[float] | None = None,
    affine_tolerance: float = AFFINE_TOLERANCE,
    progress: bool = False,
    channels: ChannelSettings | None = None,
) -> list[Problem]:
    """Every problem of the settings, the datalist and its labelled cases (see the module docstring).

    Args:
        progress: show a progress bar over the cases (on stderr, when it is a terminal).
        channels: the ``in_channels`` and ``intensity`` settings the cases are checked against.
    """
    settings = (class_names, class_weights, affine_tolerance, progress, channels or ChannelSettings(), Ranks())
    return _check(datalist, dataset_dir, num_classes, *settings)[0]


def require_valid_dataset(
    datalist: os.PathLike | str,
    dataset_dir: os.PathLike | str,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    class_weights: str | Sequence[float] | None = None,
    affine_tolerance: float = AFFINE_TOLERANCE,
    channels: ChannelSettings | None = None,
    on_case: CaseCallback | None = None,
) -> int:
    """:func:`check_dataset`, raising if anything is wrong; returns the number of cases checked. Under
    torchrun it is a collective: each rank checks its share, and all reach the same verdict.
    ``on_case`` (:class:`CaseCallback`) is given each case read without problems, while its voxels are in
    memory (what :mod:`gdlseg.data.training_ranges` gathers its ranges from), and every case's fact on
    every rank.

    Raises:
        DatasetError: listing every problem found (on rank 0 alone under torchrun, the others exit:
            :func:`~gdlseg.data.distributed.stop_every_rank`).
    """
    ranks = process_ranks()
    settings = (num_classes, class_names, class_weights, affine_tolerance, False, channels or ChannelSettings())
    problems, cases = _check(datalist, dataset_dir, *settings, ranks, on_case)
    if problems:
        stop_every_rank(DatasetError(problems, cases), "the dataset check found problems", ranks)
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
    in_channels: int | None = None,
    intensity: str | Sequence[str] | None = None,
    on_case: CaseCallback | None = None,
) -> int | None:
    """The training's check (bundle ``training_setup``): :func:`require_valid_dataset`, or with the
    ``check_data`` setting off only the (instant) class and channel settings check. Returns the number
    of cases checked, None when they were skipped. Under torchrun every rank must call it (each checks
    its share of the cases); a failure is printed once, by rank 0, and stops every rank.

    Args:
        in_channels: the network's input channels: every case must have that many.
        intensity: one preset, or one per channel.
        on_case: as :func:`require_valid_dataset`'s (never called when the check is off).

    Raises:
        DatasetError: listing every problem found.
    """
    channels = ChannelSettings(in_channels, intensity)
    if not switch(check_data, "check_data"):
        names = dataset_channel_names(datalist)
        if problems := check_settings(num_classes, class_names, class_weights, intensity, in_channels, names):
            stop_every_rank(DatasetError(problems, 0), "the settings check found problems")
        logger.warning("check_data is off: the cases are not checked before training")
        return None
    return require_valid_dataset(
        datalist, dataset_dir, num_classes, class_names, class_weights, affine_tolerance, channels, on_case
    )
