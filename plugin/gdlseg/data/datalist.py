"""Datalists in the Medical Segmentation Decathlon layout, and inference inputs.

A datalist is a JSON file with a ``"training"`` list of ``{"image": …, "label": …}`` and optional
``"validation"`` and ``"test"`` lists; relative paths resolve against ``dataset_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

from gdlseg.data.readers import is_dicom_series_folder

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def resolve_case(item: dict | str, dataset_dir: os.PathLike | str) -> dict:
    """A datalist entry as ``{"image": path[, "label": path, …]}``, relative paths joined to ``dataset_dir``."""
    dataset_dir = Path(dataset_dir)
    entry = {"image": item} if isinstance(item, str) else dict(item)
    for key in ("image", "label"):
        if key in entry and not os.path.isabs(entry[key]):
            entry[key] = str(dataset_dir / entry[key])
    return entry


def read_datalist(datalist: os.PathLike | str) -> dict:
    """Load a datalist JSON file.

    Raises:
        ValueError: the file is missing, is not JSON, or has no non-empty ``"training"`` list.
    """
    path = Path(datalist)
    if not path.is_file():
        raise ValueError(f"datalist {path} does not exist.")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"datalist {path} is not valid JSON: {error}") from error
    if not isinstance(content, dict) or not content.get("training"):
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
        ValueError: fewer validation cases than processes, naming both numbers and the fixes.
    """
    count = len(validation_cases)
    if count >= processes:
        return count
    fraction = "" if val_fraction is None else f" (now {val_fraction})"
    raise ValueError(
        f"torchrun started {processes} processes but the validation set has {count} case(s): each process "
        f"scores its own share of the validation cases and needs at least one. Start at most {count} "
        f'process(es) (--nproc_per_node, --nnodes), or give more validation cases: a "validation" list in '
        f"the datalist, or a larger val_fraction{fraction}."
    )


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


def case_name(path: os.PathLike | str) -> str:
    """A scan's case name: the file name without its extension, or the folder name of a DICOM series."""
    name = Path(path).name
    for suffix in sorted((*IMAGE_SUFFIXES, ".dcm"), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def prediction_subject(metadata: dict, saver: object = None) -> dict:
    """MONAI ``SaveImage`` ``output_name_formatter``: name outputs by :func:`case_name`.

    MONAI's default drops everything after the last dot of the input's name, so DICOM series folders
    named by UID (``1.2.840.99.5`` and ``1.2.840.99.6``) would both become ``1.2.840.99_seg.nii.gz``.
    The ``.nii.gz`` added here is the part MONAI strips.
    """
    return {"subject": f"{case_name(metadata['filename_or_obj'])}.nii.gz", "idx": None}


def require_unique_case_names(cases: list[dict]) -> list[dict]:
    """Return ``cases`` unchanged after checking that no two images share a case name.

    Raises:
        ValueError: naming the case and its two inputs (file or folder names only), since their
            outputs ``<case>_seg.*`` would overwrite each other.
    """
    seen: dict[str, str] = {}
    for case in cases:
        name = case_name(case["image"])
        if name in seen:
            raise ValueError(
                f"case name {name!r} is used by two inputs ({Path(seen[name]).name} and "
                f"{Path(case['image']).name}); their outputs <case>_seg.* would overwrite each other. Rename one."
            )
        seen[name] = case["image"]
    return cases


def inference_inputs(inputs: os.PathLike | str | list, dataset_dir: os.PathLike | str = ".") -> list[dict]:
    """Turn what a user points inference at into ``[{"image": path}, …]``.

    Each input may be an image file, a DICOM series folder, a folder of image files, or a datalist
    JSON (its ``"test"`` list, or else its training images).

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
            cases += [{"image": str(p)} for p in files + series]
        elif path.is_file():
            cases.append({"image": str(path)})
        else:
            raise ValueError(f"input {path} does not exist.")
    return cases
