"""Classic multi-class soft Dice (or soft Jaccard) loss with class weights: the mean of per-class losses."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from gdlseg.losses.base import OverlapLoss
from gdlseg.losses.statistics import ClassStatistics, dice_ratio


def weighted_dice_from_statistics(
    statistics: ClassStatistics,
    class_weights: torch.Tensor,
    scored: torch.Tensor,
    smooth_nr: float,
    smooth_dr: float,
    jaccard: bool = False,
) -> torch.Tensor:
    """Class-weighted mean of per-class Dice (or Jaccard) losses per row.

        DL_c = 1 − (2 I_c + smooth_nr) / (P_c + T_c + smooth_dr)              (Dice)
        JL_c = 1 − (2 I_c + smooth_nr) / (2 (P_c + T_c − I_c) + smooth_dr)    (``jaccard``: soft IoU)
        loss = Σ_c α_c L_c / Σ_c α_c          (over the scored classes)

    The Jaccard form is MONAI's ``DiceLoss(jaccard=True)``: ``P + T − I`` is the soft union, and the
    factor 2 on both sides keeps the smoothing terms where MONAI has them. A class absent from both
    target and prediction has ``L_c = 1 − smooth_nr/smooth_dr`` (0 with the default equal smoothing);
    an absent class that is predicted costs close to 1.

    Args:
        statistics: ``(R, C)`` statistics.
        class_weights: ``(C,)`` α.
        scored: ``(C,)`` bool.
        jaccard: the soft Jaccard (IoU) loss instead of the Dice loss.

    Returns:
        ``(R,)`` loss per row.
    """
    alpha = torch.where(scored, class_weights, torch.zeros_like(class_weights)).to(statistics.intersection.dtype)
    denominator = statistics.prediction + statistics.target
    if jaccard:
        denominator = 2.0 * (denominator - statistics.intersection)
    per_class = 1.0 - dice_ratio(statistics.intersection, denominator, smooth_nr, smooth_dr)
    return (per_class * alpha).sum(dim=1) / alpha.sum()


class ClassWeightedDiceLoss(OverlapLoss):
    """Multi-class soft Dice loss: the class-weighted mean of per-class Dice losses.

        DL_c = 1 − (2 Σ_v p_cv t_cv + smooth_nr) / (Σ_v p_cv + Σ_v t_cv + smooth_dr)
        loss = Σ_c α_c · DL_c / Σ_c α_c

    With ``squared_pred`` the denominator is the V-Net one, ``Σ p² + Σ t²`` (Milletari et al. 2016);
    with ``jaccard`` the loss is the soft Jaccard (IoU) loss of MONAI's ``DiceLoss(jaccard=True)``,
    ``JL_c = 1 − (2 I_c + smooth_nr) / (2 (P_c + T_c − I_c) + smooth_dr)``.
    Unlike MONAI's ``DiceLoss(weight=…)``, the weights are divided by their sum (so the loss stays in
    [0, 1]) and there is always one weight per input channel, background included.

    Shapes, target forms, ``ignore_index``, ``batch`` and ``reduction`` are those of
    :class:`gdlseg.losses.ClassWeightedGeneralizedDiceLoss`; ``reduction="none"`` gives one
    (class-averaged) value per row, shaped ``(R, 1, 1, …)``.

    Args:
        include_background, to_onehot_y, sigmoid, softmax, other_act, reduction, smooth_nr, smooth_dr,
        batch, soft_label, class_weights, ignore_index, validate_labels: as in
            :class:`gdlseg.losses.ClassWeightedGeneralizedDiceLoss`.
        squared_pred: square predictions and targets in the denominator.
        jaccard: compute the soft Jaccard (IoU) loss instead of the Dice loss.

    Raises:
        ValueError: on bad arguments, shapes, class-weight counts or label values.
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        soft_label: bool = False,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        ignore_index: int | None = None,
        validate_labels: bool = True,
    ) -> None:
        super().__init__(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            reduction=reduction,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            soft_label=soft_label,
            class_weights=class_weights,
            ignore_index=ignore_index,
            validate_labels=validate_labels,
        )
        self.squared_pred = bool(squared_pred)
        self.jaccard = bool(jaccard)

    def rows_from_statistics(
        self, statistics: ClassStatistics, class_weights: torch.Tensor, scored: torch.Tensor
    ) -> torch.Tensor:
        """``(R,)`` class-weighted mean Dice (or Jaccard) loss per row."""
        return weighted_dice_from_statistics(
            statistics, class_weights, scored, self.smooth_nr, self.smooth_dr, self.jaccard
        )
