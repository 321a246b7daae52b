"""Pair prediction files with reference files (and optional images) by case name.

A prediction is named ``<case>_seg.<suffix>`` (as ``gdlseg infer`` and the bundle write them; a name
without ``_seg`` is taken as the case name itself), a reference ``<case>.<suffix>``, an image
``<case>.<suffix>`` or a DICOM series folder ``<case>/``. Suffixes: those of
:data:`gdlseg.data.datalist.IMAGE_SUFFIXES`. Hidden files (a write in progress) are skipped.
Only case names leave this module's reports: never the folders, which may name patients.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gdlseg.data.datalist import IMAGE_SUFFIXES, case_name
from gdlseg.data.readers import is_dicom_series_folder

PREDICTION_SUFFIX = "_seg"


def prediction_case_name(path: os.PathLike | str) -> str:
    """``liver_003_seg.nii.gz`` → ``liver_003``."""
    name = case_name(path)
    return name[: -len(PREDICTION_SUFFIX)] if name.endswith(PREDICTION_SUFFIX) else name


def index_folder(folder: os.PathLike | str, prediction: bool = False, series_folders: bool = False) -> dict[str, Path]:
    """``{case name: path}`` of the image files in ``folder`` (and DICOM series sub-folders if asked).

    Raises:
        ValueError: ``folder`` is not a folder, or two files give the same case name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES):
            name = prediction_case_name(path) if prediction else case_name(path)
        elif series_folders and is_dicom_series_folder(path):
            name = path.name
        else:
            continue
        if name in cases:
            raise ValueError(f"{folder}: {cases[name].name} and {path.name} are both case {name!r}; keep one")
        cases[name] = path
    return cases


@dataclass
class CasePairs:
    """Matched cases (sorted by name) and the names found on one side only."""

    matched: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # case → (prediction, reference)
    predictions_without_reference: list[str] = field(default_factory=list)
    references_without_prediction: list[str] = field(default_factory=list)


def pair_cases(predictions: os.PathLike | str, references: os.PathLike | str) -> CasePairs:
    """Pair ``<case>_seg.*`` in ``predictions`` with ``<case>.*`` in ``references``."""
    predicted = index_folder(predictions, prediction=True)
    reference = index_folder(references)
    return CasePairs(
        matched={case: (predicted[case], reference[case]) for case in sorted(predicted.keys() & reference.keys())},
        predictions_without_reference=sorted(predicted.keys() - reference.keys()),
        references_without_prediction=sorted(reference.keys() - predicted.keys()),
    )
