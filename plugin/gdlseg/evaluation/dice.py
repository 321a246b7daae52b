"""Per-class Dice coefficient of label maps, from the same statistics as the losses."""

from __future__ import annotations

import torch

from gdlseg.losses.overlap import dice_ratio
from gdlseg.losses.statistics import hard_label_statistics


def dice_per_class(
    prediction: torch.Tensor,
    reference: torch.Tensor,
    num_classes: int,
    empty_score: float = float("nan"),
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Dice coefficient ``2TP / (2TP + FP + FN)`` for every case and class.

    Args:
        prediction: label map ``(B, *spatial)`` or ``(B, 1, *spatial)`` of integers in ``[0, C)``.
        reference: the reference label map, same shape.
        num_classes: C, background included.
        empty_score: the score of a class absent from both prediction and reference. NaN (default)
            marks it undefined, so ``torch.nanmean`` leaves it out of averages (MONAI's
            ``ignore_empty``); 1.0 counts agreement on absence as perfect.
        ignore_index: reference value whose voxels are left out of every count.

    Returns:
        ``(B, C)`` float64 scores.

    Raises:
        ValueError: shapes differ, or a label is outside ``[0, C)``.
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} differs from reference {tuple(reference.shape)}.")
    batch = reference.shape[0]
    prediction = prediction.reshape(batch, -1).long()
    reference = reference.reshape(batch, -1).long()
    valid = None if ignore_index is None else reference != ignore_index
    if valid is not None:
        reference = torch.where(valid, reference, 0)
        prediction = torch.where(valid, prediction, 0)
    for name, labels in (("prediction", prediction), ("reference", reference)):
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"{name} holds labels in [{int(labels.min())}, {int(labels.max())}], outside [0, {num_classes})."
            )
    statistics = hard_label_statistics(prediction, reference, num_classes, valid)
    total = statistics.prediction + statistics.target
    scores = dice_ratio(statistics.intersection, total, 0.0, 0.0)
    return torch.where(total > 0, scores, torch.full_like(scores, empty_score))
