"""Datalists in the Medical Segmentation Decathlon layout, and inference inputs.

A datalist is a JSON file with a ``"training"`` list of ``{"image": …, "label": …}`` and optional
``"validation"`` and ``"test"`` lists; relative paths resolve against ``dataset_dir``. An ``image`` is one
file or a list of files, one per channel (:mod:`gdlseg.data.channels`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path

from gdlseg.data.channels import (
    CHANNEL_SUFFIX,
    ChannelGroup,
    channel_files,
    channel_names,
    file_channels,
    group_channel_files,
    resolved_against,
)
from gdlseg.data.distributed import stop_every_rank
from gdlseg.data.readers import ScanError, is_dicom_series_folder, read_header

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def resolve_case(item: dict | str, dataset_dir: os.PathLike | str) -> dict:
    """A datalist entry as ``{"image": path or [path, …][, "label": path, …]}``, relative paths joined to
    ``dataset_dir`` (an image list is one file per channel)."""
    dataset_dir = Path(dataset_dir)
    entry = {"image": item} if isinstance(item, (str, list)) else dict(item)
    for key in ("image", "label"):
        if isinstance(entry.get(key), list):
            entry[key] = resolved_against([str(path) for path in entry[key]], dataset_dir)
        elif key in entry and not os.path.isabs(entry[key]):
            entry[key] = str(dataset_dir / entry[key])
    return entry


def read_datalist(datalist: os.PathLike | str) -> dict:
    """Load a datalist JSON file.

    Raises:
        ValueError: the file is missing, is not JSON, or has no non-empty ``"training"`` list.
    """
    path = Path(datalist)
    content = _json_content(path)
    if not content.get("training"):
        raise ValueError(f'datalist {path} has no non-empty "training" list.')
    return content


def _json_content(path: Path) -> dict:
    """The JSON object of a datalist file, whatever lists it holds.

    Raises:
        ValueError: the file is missing, is not JSON, or is not a JSON object.
        OSError: the file cannot be read (permissions, a folder).
    """
    if not path.is_file():
        raise ValueError(f"datalist {path} does not exist.")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"datalist {path} is not valid JSON: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f'datalist {path} has no non-empty "training" list.')
    return content


def split_datalist(
    datalist: os.PathLike | str,
    dataset_dir: os.PathLike | str,
    part: str,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> list[dict]:
    """The ``"training"`` or ``"validation"`` cases of a datalist, paths resolved.

    If the datalist has a ``"validation"`` list it is used as is; otherwise a deterministic hold-out
    of ``val_fraction`` of the training cases (at least one, when there are two or more) is drawn
    with ``seed`` and removed from training.
    """
    if part not in ("training", "validation"):
        raise ValueError(f"part must be 'training' or 'validation', got {part!r}.")
    content = read_datalist(datalist)
    base = Path(dataset_dir)
    training = [resolve_case(item, base) for item in content["training"]]
    if content.get("validation"):
        validation = [resolve_case(item, base) for item in content["validation"]]
        return training if part == "training" else validation
    order = list(range(len(training)))
    random.Random(seed).shuffle(order)
    count = min(len(training) - 1, max(1, round(val_fraction * len(training)))) if len(training) > 1 else 0
    held_out = set(order[:count])
    chosen = [case for i, case in enumerate(training) if (i in held_out) == (part == "validation")]
    return chosen


def require_validation_case_per_process(
    validation_cases: Sequence[dict], processes: int, val_fraction: float | None = None
) -> int:
    """Distributed validation scores each case once, spread over the processes, so every process
    needs at least one validation case; checked before anything is built or written.

    Returns:
        The number of validation cases.

    Raises:
        ValueError: fewer validation cases than processes, naming both numbers and the fixes (on rank 0;
            the other ranks exit with one line: :func:`~gdlseg.data.distributed.stop_every_rank`).
    """
    count = len(validation_cases)
    if count >= processes:
        return count
    fraction = "" if val_fraction is None else f" (now {val_fraction})"
    error = ValueError(
        f"torchrun started {processes} processes but the validation set has {count} case(s): each process "
        f"scores its own share of the validation cases and needs at least one. Start at most {count} "
        f'process(es) (--nproc_per_node, --nnodes), or give more validation cases: a "validation" list in '
        f"the datalist, or a larger val_fraction{fraction}."
    )
    stop_every_rank(error, "too few validation cases for the processes")


def datalist_class_count(datalist: os.PathLike | str) -> int | None:
    """The number of classes the datalist's ``"labels"`` names (background included); None when it names
    none or cannot be read (the dataset check then names the datalist). A datalist without a
    ``"training"`` list still gives its count: the check names the missing list."""
    try:
        labels = _json_content(Path(datalist)).get("labels")
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return len(labels) if isinstance(labels, dict) and labels else None


def datalist_fingerprint(datalist: os.PathLike | str) -> dict:
    """SHA-256 of the datalist file and its case counts: identifies the data without any path."""
    path = Path(datalist)
    content = read_datalist(path)
    return {
        "datalist_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "training_cases": len(content.get("training", [])),
        "validation_cases": len(content.get("validation", [])),
        "test_cases": len(content.get("test", [])),
    }


def case_name(path: os.PathLike | str | list) -> str:
    """A scan's case name: the file name without its extension, or the folder name of a DICOM series.
    A case of several files (one per channel) is named by channel 0's file, without nnU-Net's ``_0000``."""
    if not isinstance(path, (str, os.PathLike)):
        files = channel_files(path)
        return case_name(files[0]) if len(files) == 1 else _without_channel_suffix(case_name(files[0]))
    name = Path(path).name
    for suffix in sorted((*IMAGE_SUFFIXES, ".dcm"), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _without_channel_suffix(name: str) -> str:
    match = CHANNEL_SUFFIX.match(name)
    return match["case"] if match is not None and int(match["channel"]) == 0 else name


def prediction_subject(metadata: dict, saver: object = None) -> dict:
    """MONAI ``SaveImage`` ``output_name_formatter``: name outputs by :func:`case_name`.

    MONAI's default drops everything after the last dot of the input's name, so DICOM series folders
    named by UID (``1.2.840.99.5`` and ``1.2.840.99.6``) would both become ``1.2.840.99_seg.nii.gz``.
    The ``.nii.gz`` added here is the part MONAI strips. A case loaded from several files (MONAI stacks
    them on a new axis 0, ``original_channel_dim`` 0; the metadata names channel 0's file) is named as
    :func:`case_name` names it.
    """
    name = case_name(metadata["filename_or_obj"])
    if _stacked_channels(metadata.get("original_channel_dim")):
        name = _without_channel_suffix(name)
    return {"subject": f"{name}.nii.gz", "idx": None}


def _stacked_channels(channel_dim: object) -> bool:
    """Whether MONAI's ``original_channel_dim`` is 0 (files stacked as channels), whatever its type: an
    int, a float, a 0-d or one-element tensor or array; anything else (None, NaN, ``"no_channel"``,
    -1) is not."""
    try:
        value = float(channel_dim)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several elements
        return False
    return not math.isnan(value) and value == 0


def require_unique_case_names(cases: list[dict]) -> list[dict]:
    """Return ``cases`` unchanged after checking that no two images share a case name (a case's
    ``"case"``, else :func:`case_name` of its image).

    Raises:
        ValueError: naming the case and its two inputs (file or folder names only), since their
            outputs ``<case>_seg.*`` would overwrite each other.
    """
    seen: dict[str, str] = {}
    for case in cases:
        name = case.get("case") or case_name(case["image"])
        first = channel_files(case["image"])[0]
        if name in seen:
            raise ValueError(
                f"case name {name!r} is used by two inputs ({Path(seen[name]).name} and "
                f"{Path(first).name}); their outputs <case>_seg.* would overwrite each other. Rename one."
            )
        seen[name] = first
    return cases


def segmentable_cases(cases: list[dict]) -> list[dict]:
    """``cases`` without those that have a ``"problem"`` (a missing channel file, see
    :func:`inference_inputs`), each dropped with a logged warning naming the case (never a path), so
    that one incomplete case does not stop the others (the bundle's ``inference.yaml``).

    Raises:
        ValueError: every case has a problem (listing them): there is nothing to segment.
    """
    problems = [case["problem"] for case in cases if case.get("problem")]
    for problem in problems:
        logger.warning("skipping a case that cannot be segmented: %s", problem)
    if problems and len(problems) == len(cases):
        raise ValueError(f"no input can be segmented: {'; '.join(problems)}")
    return [case for case in cases if not case.get("problem")]


def inference_inputs(
    inputs: os.PathLike | str | list, dataset_dir: os.PathLike | str = ".", channels: int = 1
) -> list[dict]:
    """Turn what a user points inference at into ``[{"image": path or [path, …]}, …]``.

    Each input may be an image file, a DICOM series folder, a folder of image files, or a datalist
    JSON (its ``"test"`` list, or else its training images; an image may be a list of channel files).
    For a network of several ``channels``, a folder's ``<case>_0000.*``, ``<case>_0001.*``, … files are
    one case each (nnU-Net's layout): ``{"image": [files], "case": name}``, with a ``"problem"`` when a
    channel is missing, so that only that case fails. With one channel every file is a case (as before).

    Raises:
        ValueError: an input that does not exist or holds no image.
    """
    cases: list[dict] = []
    for item in inputs if isinstance(inputs, (list, tuple)) else [inputs]:
        path = Path(item)
        if path.suffix == ".json" and path.is_file():
            content = read_datalist(path)
            listed = content.get("test") or content["training"]
            cases += [{"image": resolve_case(item, Path(dataset_dir))["image"]} for item in listed]
        elif path.is_dir() and is_dicom_series_folder(path):
            cases.append({"image": str(path)})
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES))
            series = sorted(p for p in path.iterdir() if p.is_dir() and is_dicom_series_folder(p))
            if not files and not series:
                raise ValueError(f"input folder {path} holds no image file or DICOM series.")
            if channels > 1:
                cases += [_channel_case(group) for group in group_channel_files(files, channels, case_name)]
                cases += [{"image": str(p)} for p in series]
            else:
                cases += [{"image": str(p)} for p in files + series]
        elif path.is_file():
            cases.append({"image": str(path)})
        else:
            raise ValueError(f"input {path} does not exist.")
    return cases


def _channel_case(group: ChannelGroup) -> dict:
    files = list(group.files)
    case = {"image": files if len(files) > 1 else files[0], "case": group.case}
    if group.problem:
        case["problem"] = group.problem
    return case


def dataset_channel_names(datalist: os.PathLike | str) -> list[str] | None:
    """The datalist's channel names (``"channel_names"`` or ``"modality"``); None when it names none or
    cannot be read (the dataset check then names the datalist)."""
    try:
        return channel_names(read_datalist(datalist))
    except ValueError:
        return None


def dataset_channels(datalist: os.PathLike | str, dataset_dir: os.PathLike | str) -> int:
    """The channels of a dataset, for the network's ``in_channels``: the number of its channel names,
    else those of its first training case (the number of its image files, or its one file's fourth
    axis).

    A datalist that cannot be read, or a first image whose header cannot, gives 1: the model zoo's tools
    load ``train.yaml`` without any data, and a training stops at its dataset check, which names them.
    """
    try:
        content = read_datalist(datalist)
    except ValueError:
        return 1
    names = channel_names(content)
    if names is not None:
        return len(names)
    first = content["training"][0]
    image = first.get("image") if isinstance(first, dict) else first
    if not image:
        return 1
    files = channel_files(resolve_case({"image": image}, dataset_dir)["image"])
    if len(files) > 1:
        return len(files)
    try:
        shape = read_header(files[0]).shape
    except ScanError:
        return 1
    return file_channels(shape)
