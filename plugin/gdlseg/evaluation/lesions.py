"""Lesion-level detection of one class in one case: connected components matched by overlap.

For a class with masks ``P`` (prediction) and ``R`` (reference):

- **Lesions** are the connected components of ``R`` (reference lesions ``r_1 … r_n``) and of ``P``
  (predicted components ``p_1 … p_m``), with face connectivity (6 neighbours in 3D, 4 in 2D:
  ``scipy.ndimage.label``'s default), as :mod:`gdlseg.inference.postprocessing` and
  :mod:`gdlseg.inference.statistics` count them. Diagonal-only contact leaves two lesions.
- **Matching**: ``r_i`` and ``p_j`` match when they share at least one voxel. Any overlap, rather than an
  IoU threshold (e.g. IoU > 0.1), is the rule of the post-processing's lesion-level sensitivity (one
  definition in the project), and suits small lesions: a 2×2×2-voxel lesion predicted one voxel too
  wide on every side has IoU 8/64 = 0.125, close to any threshold. Its cost: a prediction covering a
  large area detects whatever it touches (the merge policy below says how that is counted).
- **Counts**: ``TP`` = reference lesions matched by some predicted component (detected); ``FN = n − TP``
  (missed); ``FP`` = predicted components matching no reference lesion; ``TP_pred = m − FP`` = predicted
  components matching some reference lesion.
- **Merges and splits** are counted on each side in its own units, without one-to-one assignment: one
  predicted component touching two reference lesions detects both (``TP`` 2, ``TP_pred`` 1); two predicted
  components touching one reference lesion detect it once (``TP`` 1, ``TP_pred`` 2). Neither is an FP or FN.
- **Scores**: sensitivity ``= TP / n`` (share of reference lesions detected); precision ``= TP_pred / m``
  (share of predicted components that are real, i.e. 1 − the lesion-wise false discovery rate); F1 = their
  harmonic mean ``2·S·P / (S + P)``. When every overlap is one-to-one (``TP = TP_pred``) these are the usual
  ``TP / (TP + FN)``, ``TP / (TP + FP)`` and ``2TP / (2TP + FP + FN)``.

Edge cases: no reference lesion → sensitivity NaN; no predicted component → precision NaN; F1 is NaN when
both are (nothing to detect, nothing predicted), 0 when only one is NaN (lesions missed, or only false
positives) or when both are 0. NaN values are left out of means over cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CONNECTIVITY = "face"
LESION_COLUMNS = (
    "lesions_reference",
    "lesions_predicted",
    "lesions_tp",
    "lesions_fn",
    "lesions_fp",
    "lesions_tp_predicted",
    "lesion_sensitivity",
    "lesion_precision",
    "lesion_f1",
)


@dataclass(frozen=True)
class LesionMatch:
    """The lesions of one class in one case (module docstring), in ``scipy.ndimage.label`` order.

    Attributes:
        reference_ml: volume in ml of each reference lesion ``(n,)``.
        detected: whether each reference lesion is matched by a predicted component ``(n,)``.
        predicted_ml: volume in ml of each predicted component ``(m,)``.
        true_predicted: whether each predicted component matches a reference lesion ``(m,)``.
    """

    reference_ml: np.ndarray
    detected: np.ndarray
    predicted_ml: np.ndarray
    true_predicted: np.ndarray

    @property
    def tp(self) -> int:
        return int(self.detected.sum())

    @property
    def fn(self) -> int:
        return int(self.detected.size - self.detected.sum())

    @property
    def fp(self) -> int:
        return int(self.true_predicted.size - self.true_predicted.sum())

    @property
    def tp_predicted(self) -> int:
        return int(self.true_predicted.sum())

    def row(self) -> dict[str, float]:
        """The :data:`LESION_COLUMNS` of this case and class."""
        sensitivity, precision, f1 = detection_scores([self.tp, self.fn, self.tp_predicted, self.fp]).tolist()
        return dict(
            zip(
                LESION_COLUMNS,
                (
                    self.detected.size,
                    self.true_predicted.size,
                    self.tp,
                    self.fn,
                    self.fp,
                    self.tp_predicted,
                    sensitivity,
                    precision,
                    f1,
                ),
            )
        )


def match_lesions(prediction: np.ndarray, reference: np.ndarray, voxel_ml: float) -> LesionMatch:
    """Label the components of two boolean masks of one shape and match them by overlap.

    Args:
        prediction, reference: boolean masks of one class, any spatial shape (the same).
        voxel_ml: the volume of one voxel in ml.

    Raises:
        ValueError: the shapes differ.
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference {reference.shape}.")
    reference_components, references = ndimage.label(reference)
    predicted_components, predictions = ndimage.label(prediction)
    overlap = (reference_components > 0) & (predicted_components > 0)
    detected = np.zeros(references + 1, dtype=bool)
    detected[reference_components[overlap]] = True
    true_predicted = np.zeros(predictions + 1, dtype=bool)
    true_predicted[predicted_components[overlap]] = True
    return LesionMatch(
        reference_ml=np.bincount(reference_components.ravel(), minlength=references + 1)[1:] * voxel_ml,
        detected=detected[1:],
        predicted_ml=np.bincount(predicted_components.ravel(), minlength=predictions + 1)[1:] * voxel_ml,
        true_predicted=true_predicted[1:],
    )


def detection_scores(counts: np.ndarray) -> np.ndarray:
    """Sensitivity, precision and F1 of lesion counts, with the NaN policy of the module docstring.

    Args:
        counts: ``(..., 4)``: ``TP, FN, TP_pred, FP`` of one case, or summed over cases (pooled).

    Returns:
        ``(..., 3)``: sensitivity, precision, F1.
    """
    counts = np.asarray(counts, dtype=float)
    tp, fn, tp_predicted, fp = np.moveaxis(counts, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 is NaN: nothing to detect or nothing predicted
        sensitivity = tp / (tp + fn)
        precision = tp_predicted / (tp_predicted + fp)
        f1 = 2 * sensitivity * precision / (sensitivity + precision)
    # one of the two undefined means the other is 0 (lesions all missed, or only false positives)
    zero = (sensitivity + precision == 0) | (np.isnan(sensitivity) != np.isnan(precision))
    return np.stack([sensitivity, precision, np.where(zero, 0.0, f1)], axis=-1)
