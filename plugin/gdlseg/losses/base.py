"""The settings and forward pass shared by every overlap loss of gdlseg."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from gdlseg.losses._options import (
    autocast_disabled,
    check_activation,
    check_class_weight_count,
    check_ignore_index,
    check_tversky_weights,
    choose_option,
    class_weight_tensor,
    non_negative_float,
    positive_float,
)
from gdlseg.losses.inputs import (
    check_shapes,
    check_some_class_weighted,
    class_statistics,
    parse_target,
    scored_channels,
)
from gdlseg.losses.statistics import ClassStatistics

REDUCTIONS = ("mean", "sum", "none")


def reduce_rows(rows: torch.Tensor, reduction: str, spatial_dims: int) -> torch.Tensor:
    """Reduce ``(R,)`` row losses; ``"none"`` keeps the input's rank: ``(R, 1, 1, …)``."""
    if reduction == "mean":
        return rows.mean()
    if reduction == "sum":
        return rows.sum()
    return rows.view(rows.shape[0], 1, *([1] * spatial_dims))


class ScoredStatistics(NamedTuple):
    """What every overlap term of a loss is computed from.

    statistics: ``(R, C)`` per-class sums (with the cross-entropy sum when requested).
    class_weights: ``(C,)`` user class weights α (ones when none were given), in the statistics' dtype.
    scored: ``(C,)`` bool, the channels the overlap terms score.
    """

    statistics: ClassStatistics
    class_weights: torch.Tensor
    scored: torch.Tensor


class OverlapLoss(nn.Module):
    """Base of the Dice-type losses: validates the shared arguments, parses the target, computes the
    per-class statistics and reduces the per-row losses that a subclass derives from them.

    Subclasses implement :meth:`rows_from_statistics`; ``squared_pred`` chooses ``Σ p²`` sums.
    All settings are keyword-only (see :class:`gdlseg.losses.ClassWeightedGeneralizedDiceLoss`);
    ``tversky_alpha`` / ``tversky_beta`` weigh the false positives / negatives in every overlap term
    (½ and ½: the Dice; :func:`gdlseg.losses.overlap.tversky_total`) and ``focal_exponent`` raises
    each overlap loss to that power (1: off; :func:`gdlseg.losses.overlap.focal`).
    """

    squared_pred: bool = False

    def __init__(
        self,
        *,
        include_background: bool,
        to_onehot_y: bool,
        sigmoid: bool,
        softmax: bool,
        other_act: Callable | None,
        reduction: str,
        smooth_nr: float,
        smooth_dr: float,
        batch: bool,
        soft_label: bool,
        class_weights: Sequence[float] | torch.Tensor | None,
        ignore_index: int | None,
        validate_labels: bool,
        tversky_alpha: float = 0.5,
        tversky_beta: float = 0.5,
        focal_exponent: float = 1.0,
    ) -> None:
        super().__init__()
        check_activation(sigmoid, softmax, other_act)
        self.include_background = bool(include_background)
        self.to_onehot_y = bool(to_onehot_y)
        self.sigmoid = bool(sigmoid)
        self.softmax = bool(softmax)
        self.other_act = other_act
        self.reduction = choose_option("reduction", reduction, REDUCTIONS)
        self.smooth_nr = non_negative_float("smooth_nr", smooth_nr)
        self.smooth_dr = non_negative_float("smooth_dr", smooth_dr)
        self.batch = bool(batch)
        self.soft_label = bool(soft_label)
        self.ignore_index = check_ignore_index(ignore_index)
        self.validate_labels = bool(validate_labels)
        self.tversky_alpha, self.tversky_beta = check_tversky_weights(tversky_alpha, tversky_beta)
        self.focal_exponent = positive_float("focal_exponent", focal_exponent)
        weights = class_weight_tensor(class_weights)
        check_some_class_weighted(weights, self.include_background, self.ignore_index)
        self.register_buffer("class_weights", weights)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``input`` ``(B, C, *spatial)`` against a label map or a dense target."""
        with autocast_disabled(input):
            terms = self.scored_statistics(input, target)
            rows = self.rows_from_statistics(*terms)
            return reduce_rows(rows, self.reduction, input.ndim - 2)

    def scored_statistics(
        self, input: torch.Tensor, target: torch.Tensor, with_cross_entropy: bool = False
    ) -> ScoredStatistics:
        """Check and parse ``target`` for ``input``, then compute its per-class statistics.

        Call inside :func:`~gdlseg.losses._options.autocast_disabled`. ``with_cross_entropy`` adds
        the cross-entropy sum weighted by the class weights (see
        :func:`gdlseg.losses.inputs.class_statistics`).

        Raises:
            ValueError: mismatched shapes, a wrong class-weight count or bad label values.
        """
        check_shapes(input, target)
        num_channels = input.shape[1]
        check_class_weight_count(self.class_weights, num_channels)
        parsed = parse_target(
            target, num_channels, self.to_onehot_y, self.ignore_index, self.validate_labels, self.soft_label
        )
        statistics = class_statistics(
            input,
            parsed,
            sigmoid=self.sigmoid,
            softmax=self.softmax,
            other_act=self.other_act,
            squared_pred=self.squared_pred,
            soft_label=self.soft_label,
            batch=self.batch,
            with_cross_entropy=with_cross_entropy,
            cross_entropy_weights=self.class_weights if with_cross_entropy else None,
        )
        like = statistics.intersection
        if self.class_weights is None:
            class_weights = torch.ones(num_channels, dtype=like.dtype, device=like.device)
        else:
            class_weights = self.class_weights.to(device=like.device, dtype=like.dtype)
        scored = scored_channels(num_channels, self.include_background, self.ignore_index, like.device)
        return ScoredStatistics(statistics, class_weights, scored)

    def rows_from_statistics(
        self, statistics: ClassStatistics, class_weights: torch.Tensor, scored: torch.Tensor
    ) -> torch.Tensor:
        """``(R,)`` loss per row from ``(R, C)`` statistics, ``(C,)`` weights and scored mask."""
        raise NotImplementedError
