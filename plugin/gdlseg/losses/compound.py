"""Generalized Dice + cross-entropy: λ_gdl·GDL + λ_ce·CE on one parsed target."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gdlseg.losses._options import autocast_disabled, non_negative_float
from gdlseg.losses.base import reduce_rows
from gdlseg.losses.cross_entropy import weighted_cross_entropy_rows
from gdlseg.losses.generalized_dice import ClassWeightedGeneralizedDiceLoss


class GeneralizedDiceCELoss(nn.Module):
    """``λ_gdl · GDL + λ_ce · CE`` with the same class weights and ``ignore_index`` in both terms.

    The GDL term is :class:`ClassWeightedGeneralizedDiceLoss`; the CE term is
    :func:`gdlseg.losses.cross_entropy.weighted_cross_entropy_rows` on the raw logits (softmax
    cross-entropy, or per-channel binary cross-entropy with ``sigmoid``). The CE always covers every
    channel, background included, as in MONAI's ``DiceCELoss``. The target is parsed once.

    Args:
        lambda_gdl: weight of the GDL term, >= 0.
        lambda_ce: weight of the CE term, >= 0.
        softmax / sigmoid: exactly one must be True (CE needs logits).
        other arguments: as in :class:`ClassWeightedGeneralizedDiceLoss`.

    Raises:
        ValueError: both lambdas 0, not exactly one of softmax/sigmoid, or the GDL's own checks.
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
    ) -> None:
        super().__init__()
        if bool(sigmoid) == bool(softmax):
            raise ValueError(
                "GeneralizedDiceCELoss needs raw logits: set exactly one of softmax=True (cross-entropy) "
                "or sigmoid=True (binary cross-entropy)."
            )
        self.lambda_gdl = non_negative_float("lambda_gdl", lambda_gdl)
        self.lambda_ce = non_negative_float("lambda_ce", lambda_ce)
        if self.lambda_gdl == 0 and self.lambda_ce == 0:
            raise ValueError("lambda_gdl and lambda_ce are both 0: the loss would be constant.")
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
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compound loss of logits ``(B, C, *spatial)`` against a label map or a dense target."""
        gdl = self.generalized_dice
        gdl.check_inputs(input, target)
        with autocast_disabled(input):
            parsed = gdl.parse(input, target)
            total = self.lambda_gdl * gdl.loss_from_target(input, parsed) if self.lambda_gdl else 0.0
            if self.lambda_ce:
                flat = input.reshape(input.shape[0], input.shape[1], -1)
                rows = weighted_cross_entropy_rows(flat, parsed, gdl.class_weights, gdl.sigmoid, gdl.batch)
                total = total + self.lambda_ce * reduce_rows(rows, gdl.reduction, input.ndim - 2)
            return total
