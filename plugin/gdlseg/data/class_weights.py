"""``class_weights: auto``: class weights from the training labels' class volumes.

For class volumes ``V_c`` summed over the training labels (background included) and frequencies
``f_c = V_c / Σ_k V_k``:

    w_c = clip( sqrt( f_max / f_c ), 1, max_ratio )        w_c = max_ratio for a class never seen

so the most frequent class (usually background) weighs 1, rarer ones up to ``max_ratio``. The
square root softens the ratio because the generalized Dice loss already weights each class by
``1/V²`` within a patch; these weights add the dataset-level prior on top.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from gdlseg.data.distributed import gather, process_ranks, run_on_share, validation_share
from gdlseg.data.readers import read_array


def class_volumes(label_files: Sequence[os.PathLike | str], num_classes: int) -> np.ndarray:
    """Voxel count of every class over the label files. Under torchrun it is a collective: each rank
    counts its :func:`~gdlseg.data.distributed.validation_share` of the files and every rank gets the
    sum over ranks, so each file is read once in all; a file that fails on one rank stops every rank
    (:func:`~gdlseg.data.distributed.run_on_share`: rank 0 prints the error once).

    Raises:
        ValueError: a label value outside ``[0, num_classes)``, naming the file.
    """
    ranks = process_ranks()

    def count_share() -> np.ndarray:
        totals = np.zeros(num_classes, dtype=np.int64)
        for path in validation_share(label_files, ranks):
            labels, _ = read_array(path)  # nibabel for NIfTI (as training reads it), SimpleITK for the rest
            counts = np.bincount(labels.astype(np.int64, copy=False).ravel(), minlength=num_classes)
            if counts.size > num_classes or labels.min() < 0:
                raise ValueError(f"{path}: label values outside [0, {num_classes}) (num_classes={num_classes}).")
            totals += counts
        return totals

    totals = run_on_share(count_share, "a training label could not be counted", ranks)
    return np.sum(gather(totals, ranks), axis=0)


def volume_class_weights(volumes: Sequence[int], max_ratio: float = 10.0) -> list[float]:
    """The ``auto`` formula of this module applied to class volumes."""
    volumes = np.asarray(volumes, dtype=np.float64)
    if volumes.sum() <= 0:
        raise ValueError("class volumes are all zero: no labelled voxel to derive weights from.")
    most = volumes.max()
    return [max_ratio if v == 0 else float(min(max_ratio, max(1.0, math.sqrt(most / v)))) for v in volumes]


def resolve_class_weights(
    class_weights: str | Sequence[float],
    volumes: Sequence[int],
    num_classes: int,
    max_ratio: float = 10.0,
) -> list[float]:
    """``"auto"`` → :func:`volume_class_weights` of the training labels' class ``volumes``; ``"none"``
    → all ones (the GDL's volume weights alone); a list is checked and returned as floats.

    Raises:
        ValueError: a list of the wrong length, or with a negative, NaN or infinite entry.
    """
    weights = validate_class_weights(class_weights, num_classes)
    if weights == "auto":
        return volume_class_weights(volumes, max_ratio)
    return [1.0] * num_classes if weights == "none" else weights


def validate_class_weights(class_weights: str | Sequence[float], num_classes: int) -> str | list[float]:
    """``"auto"``, ``"none"``, or the list as floats after checking it (without reading any label).

    Raises:
        ValueError: naming ``class_weights``: not 'auto' nor a list, a list of the wrong length, or
            an entry that is not a finite number >= 0.
    """
    if isinstance(class_weights, str):
        if class_weights not in ("auto", "none"):
            raise ValueError(f"class_weights must be 'auto', 'none' or a list of numbers, got {class_weights!r}.")
        return class_weights
    if not isinstance(class_weights, Sequence):
        raise ValueError(f"class_weights must be 'auto', 'none' or a list of numbers, got {class_weights!r}.")
    if len(class_weights) != num_classes:
        raise ValueError(f"class_weights has {len(class_weights)} entries but num_classes is {num_classes}.")
    weights = []
    for index, weight in enumerate(class_weights):
        try:
            weights.append(float(weight))
        except (TypeError, ValueError):
            raise ValueError(f"class_weights[{index}] = {weight!r} is not a number.") from None
        if not math.isfinite(weights[-1]) or weights[-1] < 0:
            raise ValueError(f"class_weights[{index}] = {weight}: every class weight must be a finite number >= 0.")
    return weights
