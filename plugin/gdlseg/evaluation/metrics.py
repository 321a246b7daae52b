"""Per-case, per-class metrics of a predicted label map against its reference.

For every foreground label ``k`` (masks ``P = prediction == k``, ``R = reference == k``):

- ``dice`` = ``2|P ∧ R| / (|P| + |R|)``, by :func:`gdlseg.evaluation.dice.dice_per_class`
  (NaN when ``P`` and ``R`` are both empty);
- ``hd95_mm``, ``msd_mm``: 95th-percentile Hausdorff and mean surface distance in mm, see
  :mod:`gdlseg.evaluation.surface` (NaN when both are empty, inf when exactly one is);
- ``nsd``: normalised surface Dice at the label's tolerance in mm, from the same surface distances
  (NaN when both are empty, 0 when exactly one is);
- ``volume_reference_ml``, ``volume_prediction_ml`` = voxel count × voxel volume (mm³) / 1000;
- for the options' lesion labels only, ``lesions``: the :class:`~gdlseg.evaluation.lesions.LesionMatch`
  of the label's connected components (:mod:`gdlseg.evaluation.lesions`).

The work per class is confined to the bounding box of ``P ∨ R`` (grown by one voxel), found for every
label in one pass, so a small lesion in a large scan costs little.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.utils import optional_import
from scipy import ndimage

from gdlseg.evaluation.dice import dice_per_class
from gdlseg.evaluation.geometry import require_same_geometry
from gdlseg.evaluation.lesions import match_lesions
from gdlseg.evaluation.options import MetricOptions
from gdlseg.evaluation.surface import (
    hausdorff_distance,
    mean_surface_distance,
    normalized_surface_dice,
    surface_distances,
)

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it

METRICS = ("dice", "hd95_mm", "msd_mm", "nsd", "volume_reference_ml", "volume_prediction_ml")


def class_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float],
    labels: Sequence[int],
    options: MetricOptions | None = None,
) -> dict[int, dict[str, Any]]:
    """The :data:`METRICS` of each label in ``labels`` (and ``lesions`` for the options' lesion labels).

    Args:
        prediction: integer label map ``(*spatial)``, values ≥ 0.
        reference: integer label map of the same shape.
        spacing: voxel size in mm along each array axis (numpy order).
        labels: the labels to score (a label absent from both maps gets the empty-class values).
        options: NSD tolerances and lesion labels; None: the defaults (τ = 2 mm, no lesion labels).

    Returns:
        ``{label: {metric: value}}``.
    """
    options = options or MetricOptions()
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference {reference.shape}.")
    highest = max(labels, default=0)
    prediction_boxes = ndimage.find_objects(prediction, max_label=highest) if highest else []
    reference_boxes = ndimage.find_objects(reference, max_label=highest) if highest else []
    voxel_ml = float(np.prod(spacing)) / 1000.0
    results = {}
    for label in labels:
        box = _union_box(prediction_boxes[label - 1], reference_boxes[label - 1], prediction.shape)
        if box is None:
            predicted = truth = np.zeros((1,) * prediction.ndim, dtype=bool)
        else:
            predicted, truth = prediction[box] == label, reference[box] == label
        distances = surface_distances(predicted, truth, spacing)
        dice = dice_per_class(torch.from_numpy(predicted).reshape(1, -1), torch.from_numpy(truth).reshape(1, -1), 2)
        results[label] = {
            "dice": float(dice[0, 1]),
            "hd95_mm": hausdorff_distance(distances, 95.0),
            "msd_mm": mean_surface_distance(distances),
            "nsd": normalized_surface_dice(distances, options.nsd_tolerance(label)),
            "volume_reference_ml": int(truth.sum()) * voxel_ml,
            "volume_prediction_ml": int(predicted.sum()) * voxel_ml,
        }
        if label in options.lesion_labels:
            results[label]["lesions"] = match_lesions(predicted, truth, voxel_ml)
    return results


def absent_class_metrics(lesions: bool = False) -> dict[str, Any]:
    """The values of a class absent from both prediction and reference (by the same code path), with
    its (empty) ``lesions`` if asked."""
    empty = np.zeros((1,), dtype=np.uint8)
    return class_metrics(empty, empty, (1.0,), [1], MetricOptions(lesion_labels=frozenset({1} if lesions else ())))[1]


def _union_box(first: tuple | None, second: tuple | None, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """The union of two bounding boxes grown by one voxel within ``shape`` (the erosion that finds
    surfaces must see background around a mask unless it touches the image border)."""
    boxes = [box for box in (first, second) if box is not None]
    if not boxes:
        return None
    return tuple(
        slice(max(min(box[axis].start for box in boxes) - 1, 0), min(max(box[axis].stop for box in boxes) + 1, size))
        for axis, size in enumerate(shape)
    )


def label_map(image: sitk.Image, num_classes: int | None = None) -> np.ndarray:
    """The voxels of a label image as an integer numpy array in SimpleITK's ``(z, y, x)`` order.

    Args:
        image: a single-component image holding class indices (integer or integral float voxels).
        num_classes: C, background included, when known: labels must lie in ``[0, C)``.

    Raises:
        ValueError: several components per voxel, non-integer or negative values, a label ≥ C.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; a label map has one")
    array = sitk.GetArrayFromImage(image)
    if array.dtype.kind == "f":
        integral = np.isfinite(array) & (array == np.rint(array))
        if not integral.all():
            raise ValueError(f"holds non-integer values (e.g. {array[~integral].flat[0]}); a label map holds classes")
        array = array.astype(np.int32)
    elif array.dtype.kind not in "iu":
        raise ValueError(f"has voxel type {array.dtype}; a label map holds integer classes")
    if array.size and int(array.min()) < 0:
        raise ValueError(f"holds the negative label {int(array.min())}")
    if num_classes is not None and array.size and int(array.max()) >= num_classes:
        raise ValueError(
            f"holds label {int(array.max())}, but there are {num_classes} classes (labels 0 to {num_classes - 1})"
        )
    return array


def image_metrics(
    prediction: sitk.Image,
    reference: sitk.Image,
    num_classes: int | None = None,
    options: MetricOptions | None = None,
) -> dict[int, dict[str, Any]]:
    """:func:`class_metrics` of two label images on the same grid, for labels ``1 … C − 1`` (or, with
    ``num_classes`` None, ``1 …`` the highest label found in either), with ``options``.

    Raises:
        ValueError: the grids differ, or a map is not a valid label map (the message says which).
    """
    require_same_geometry(prediction, reference, ("prediction", "reference"))
    arrays = []
    for role, image in (("prediction", prediction), ("reference", reference)):
        try:
            arrays.append(label_map(image, num_classes))
        except ValueError as error:
            raise ValueError(f"the {role} {error}") from None
    highest = num_classes - 1 if num_classes is not None else max(int(array.max(initial=0)) for array in arrays)
    spacing = tuple(reversed(reference.GetSpacing()))
    return class_metrics(arrays[0], arrays[1], spacing, range(1, highest + 1), options)
