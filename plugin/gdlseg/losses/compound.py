"""Generalized Dice + cross-entropy (+ soft Dice): λ_gdl·GDL + λ_ce·CE + λ_dice·Dice on one parsed target."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gdlseg.losses._options import autocast_disabled, non_negative_float
from gdlseg.losses.base import reduce_rows
from gdlseg.losses.cross_entropy import cross_entropy_from_statistics
from gdlseg.losses.dice import check_jaccard_with_tversky, weighted_dice_from_statistics
from gdlseg.losses.generalized_dice import ClassWeightedGeneralizedDiceLoss


class GeneralizedDiceCELoss(nn.Module):
    """``λ_gdl · GDL + λ_ce · CE + λ_dice · Dice`` with the same class weights and ``ignore_index`` in
    every term.

    The GDL term is :class:`ClassWeightedGeneralizedDiceLoss`; the CE term is the weighted mean
    cross-entropy of :mod:`gdlseg.losses.cross_entropy` on the raw logits (softmax cross-entropy, or
    per-channel binary cross-entropy with ``sigmoid``), per row like the GDL. The CE always covers
    every channel, background included, as in MONAI's ``DiceCELoss``. Both terms come from one pass
    over the logits: for softmax on a label map, the fused statistics function computes the CE sum
    too, keeping the memory of forward + backward at about one logits-sized buffer. The optional soft
    Dice term is :func:`gdlseg.losses.dice.weighted_dice_from_statistics` on the same statistics (the
    class-weighted mean of per-class Dice losses, scored channels only): where square GDL weights let
    the smallest class dominate, it keeps every class's own overlap in the loss.

    Args:
        lambda_gdl: weight of the GDL term, >= 0.
        lambda_ce: weight of the CE term, >= 0 (an attribute a schedule may change between calls).
        lambda_dice: weight of the soft Dice term, >= 0 (default 0: no Dice term).
        jaccard: the soft Dice term is the soft Jaccard (IoU) loss, as MONAI's
            ``DiceCELoss(jaccard=True)``; the GDL term is unchanged.
        tversky_alpha, tversky_beta, focal_exponent: the false-positive / false-negative weights and the
            focal exponent of both overlap terms (GDL and soft Dice; the CE is unchanged); ½, ½, 1 is
            the plain loss exactly (see :class:`ClassWeightedGeneralizedDiceLoss`).
        softmax / sigmoid: exactly one must be True (CE needs logits).
        other arguments: as in :class:`ClassWeightedGeneralizedDiceLoss`.

    Raises:
        ValueError: all lambdas 0, not exactly one of softmax/sigmoid, or the GDL's own checks.
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        w_type: str = "square",
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        soft_label: bool = False,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        normalize_weights: bool = True,
        ignore_index: int | None = None,
        validate_labels: bool = True,
        lambda_gdl: float = 1.0,
        lambda_ce: float = 1.0,
        max_weight_ratio: float | None = None,
        lambda_dice: float = 0.0,
        jaccard: bool = False,
        tversky_alpha: float = 0.5,
        tversky_beta: float = 0.5,
        focal_exponent: float = 1.0,
    ) -> None:
        super().__init__()
        if bool(sigmoid) == bool(softmax):
            raise ValueError(
                "GeneralizedDiceCELoss needs raw logits: set exactly one of softmax=True (cross-entropy) "
                "or sigmoid=True (binary cross-entropy)."
            )
        self.lambda_gdl = non_negative_float("lambda_gdl", lambda_gdl)
        self.lambda_ce = non_negative_float("lambda_ce", lambda_ce)
        self.lambda_dice = non_negative_float("lambda_dice", lambda_dice)
        if self.lambda_gdl == 0 and self.lambda_ce == 0 and self.lambda_dice == 0:
            raise ValueError("lambda_gdl, lambda_ce and lambda_dice are all 0: the loss would be constant.")
        self.generalized_dice = ClassWeightedGeneralizedDiceLoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            w_type=w_type,
            reduction=reduction,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            soft_label=soft_label,
            class_weights=class_weights,
            normalize_weights=normalize_weights,
            ignore_index=ignore_index,
            validate_labels=validate_labels,
            max_weight_ratio=max_weight_ratio,
            tversky_alpha=tversky_alpha,
            tversky_beta=tversky_beta,
            focal_exponent=focal_exponent,
        )
        self.jaccard = check_jaccard_with_tversky(
            bool(jaccard), self.generalized_dice.tversky_alpha, self.generalized_dice.tversky_beta
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compound loss of logits ``(B, C, *spatial)`` against a label map or a dense target."""
        gdl = self.generalized_dice
        with autocast_disabled(input):
            statistics, alpha, scored = gdl.scored_statistics(input, target, with_cross_entropy=bool(self.lambda_ce))
            rows = torch.zeros_like(statistics.intersection[:, 0])
            if self.lambda_gdl:
                rows = rows + self.lambda_gdl * gdl.rows_from_statistics(statistics, alpha, scored)
            if self.lambda_ce:
                rows = rows + self.lambda_ce * cross_entropy_from_statistics(statistics, alpha, gdl.sigmoid)
            if self.lambda_dice:
                dice = weighted_dice_from_statistics(
                    statistics,
                    alpha,
                    scored,
                    gdl.smooth_nr,
                    gdl.smooth_dr,
                    self.jaccard,
                    gdl.tversky_alpha,
                    gdl.tversky_beta,
                    gdl.focal_exponent,
                )
                rows = rows + self.lambda_dice * dice
            return reduce_rows(rows, gdl.reduction, input.ndim - 2)
