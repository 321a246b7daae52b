"""Classic multi-class soft Dice (or soft Jaccard) loss with class weights: the mean of per-class losses."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from gdlseg.losses.base import OverlapLoss
from gdlseg.losses.overlap import dice_ratio, focal, tversky_total
from gdlseg.losses.statistics import ClassStatistics


def weighted_dice_from_statistics(
    statistics: ClassStatistics,
    class_weights: torch.Tensor,
    scored: torch.Tensor,
    smooth_nr: float,
    smooth_dr: float,
    jaccard: bool = False,
    tversky_alpha: float = 0.5,
    tversky_beta: float = 0.5,
    focal_exponent: float = 1.0,
) -> torch.Tensor:
    """Class-weighted mean of per-class Dice (or Jaccard, or Tversky) losses per row.

        DL_c = 1 − (2 I_c + smooth_nr) / (P_c + T_c + smooth_dr)              (Dice)
        JL_c = 1 − (2 I_c + smooth_nr) / (2 (P_c + T_c − I_c) + smooth_dr)    (``jaccard``: soft IoU)
        TL_c = 1 − (2 I_c + smooth_nr) / (2α P_c + 2β T_c + 2(1 − α − β) I_c + smooth_dr)   (Tversky)
        loss = Σ_c α_c L_c^γ / Σ_c α_c          (over the scored classes)

    The Tversky form (weights ``tversky_alpha`` α of the false positives and ``tversky_beta`` β of the
    false negatives, :func:`gdlseg.losses.overlap.tversky_total`) is the Dice for α = β = ½ and the
    Jaccard for α = β = 1; γ is ``focal_exponent`` (Focal Tversky, Abraham & Khan 2019; 1: off).

    The Jaccard form is MONAI's ``DiceLoss(jaccard=True)``: ``P + T − I`` is the soft union, and the
    factor 2 on both sides keeps the smoothing terms where MONAI has them. A class absent from both
    target and prediction has ``L_c = 1 − smooth_nr/smooth_dr`` (0 with the default equal smoothing);
    an absent class that is predicted costs close to 1.

    Args:
        statistics: ``(R, C)`` statistics.
        class_weights: ``(C,)`` α.
        scored: ``(C,)`` bool.
        jaccard: the soft Jaccard (IoU) loss instead of the Dice loss (Tversky weights must stay ½).
        tversky_alpha, tversky_beta, focal_exponent: see above.

    Returns:
        ``(R,)`` loss per row.
    """
    alpha = torch.where(scored, class_weights, torch.zeros_like(class_weights)).to(statistics.intersection.dtype)
    if jaccard:
        denominator = 2.0 * (statistics.prediction + statistics.target - statistics.intersection)
    else:
        denominator = tversky_total(
            statistics.intersection, statistics.prediction, statistics.target, tversky_alpha, tversky_beta
        )
    per_class = focal(1.0 - dice_ratio(statistics.intersection, denominator, smooth_nr, smooth_dr), focal_exponent)
    return (per_class * alpha).sum(dim=1) / alpha.sum()


def check_jaccard_with_tversky(jaccard: bool, tversky_alpha: float, tversky_beta: float) -> bool:
    """Return ``jaccard``; raise ValueError when it is combined with Tversky weights other than ½, ½."""
    if jaccard and (tversky_alpha, tversky_beta) != (0.5, 0.5):
        raise ValueError(
            f"jaccard=True with tversky_alpha={tversky_alpha}, tversky_beta={tversky_beta}: the Jaccard loss is "
            "the Tversky loss with tversky_alpha = tversky_beta = 1; set jaccard=False and the weights instead."
        )
    return jaccard


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
        tversky_alpha, tversky_beta: weights of the false positives and negatives (½, ½: the Dice); see
            :func:`weighted_dice_from_statistics`. Not with ``jaccard`` (the Jaccard is α = β = 1).
        focal_exponent: each class's loss is raised to this power (1: off).

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
        tversky_alpha: float = 0.5,
        tversky_beta: float = 0.5,
        focal_exponent: float = 1.0,
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
            tversky_alpha=tversky_alpha,
            tversky_beta=tversky_beta,
            focal_exponent=focal_exponent,
        )
        self.squared_pred = bool(squared_pred)
        self.jaccard = check_jaccard_with_tversky(bool(jaccard), self.tversky_alpha, self.tversky_beta)

    def rows_from_statistics(
        self, statistics: ClassStatistics, class_weights: torch.Tensor, scored: torch.Tensor
    ) -> torch.Tensor:
        """``(R,)`` class-weighted mean Dice (or Jaccard) loss per row."""
        return weighted_dice_from_statistics(
            statistics,
            class_weights,
            scored,
            self.smooth_nr,
            self.smooth_dr,
            self.jaccard,
            self.tversky_alpha,
            self.tversky_beta,
            self.focal_exponent,
        )
