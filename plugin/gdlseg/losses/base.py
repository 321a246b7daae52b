"""The settings and forward pass shared by every overlap loss of gdlseg."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from gdlseg.losses._options import (
    autocast_disabled,
    check_activation,
    check_class_weight_count,
    check_ignore_index,
    choose_option,
    class_weight_tensor,
    non_negative_float,
)
from gdlseg.losses.inputs import (
    LossTarget,
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


class OverlapLoss(nn.Module):
    """Base of the Dice-type losses: validates the shared arguments, parses the target, computes the
    per-class statistics and reduces the per-row losses that a subclass derives from them.

    Subclasses implement :meth:`rows_from_statistics`; ``squared_pred`` chooses ``Σ p²`` sums.
    """

    squared_pred: bool = False

    def __init__(
        self,
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
    ) -> None:
        super().__init__()
        check_activation(sigmoid, softmax, other_act)
        self.include_background = bool(include_background)
        self.to_onehot_y = bool(to_onehot_y)
        self.sigmoid = bool(sigmoid)
        self.softmax = bool(softmax)
        self.other_act = other_act
        self.reduction = choose_option("reduction", str(reduction).lower(), REDUCTIONS)
        self.smooth_nr = non_negative_float("smooth_nr", smooth_nr)
        self.smooth_dr = non_negative_float("smooth_dr", smooth_dr)
        self.batch = bool(batch)
        self.soft_label = bool(soft_label)
        self.ignore_index = check_ignore_index(ignore_index)
        self.validate_labels = bool(validate_labels)
        weights = class_weight_tensor(class_weights)
        check_some_class_weighted(weights, self.include_background, self.ignore_index)
        self.register_buffer("class_weights", weights)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``input`` ``(B, C, *spatial)`` against a label map or a dense target."""
        self.check_inputs(input, target)
        with autocast_disabled(input):
            parsed = self.parse(input, target)
            return self.loss_from_target(input, parsed)

    def check_inputs(self, input: torch.Tensor, target: torch.Tensor) -> None:
        """Raise ValueError on mismatched shapes or a wrong class-weight count."""
        check_shapes(input, target)
        check_class_weight_count(self.class_weights, input.shape[1])

    def parse(self, input: torch.Tensor, target: torch.Tensor) -> LossTarget:
        """Flatten and validate ``target`` for ``input``'s channel count."""
        return parse_target(target, input.shape[1], self.to_onehot_y, self.ignore_index, self.validate_labels)

    def loss_from_target(self, input: torch.Tensor, target: LossTarget) -> torch.Tensor:
        """The reduced loss for a parsed target."""
        rows = self.rows(self.statistics(input, target), input.shape[1])
        return reduce_rows(rows, self.reduction, input.ndim - 2)

    def statistics(self, input: torch.Tensor, target: LossTarget, with_cross_entropy: bool = False) -> ClassStatistics:
        """Per-class statistics of ``input``; ``with_cross_entropy`` adds the cross-entropy sum
        weighted by the class weights (see :func:`gdlseg.losses.inputs.class_statistics`)."""
        return class_statistics(
            input,
            target,
            self.sigmoid,
            self.softmax,
            self.other_act,
            self.squared_pred,
            self.soft_label,
            self.batch,
            with_cross_entropy,
            self.class_weights if with_cross_entropy else None,
        )

    def user_class_weights(self, num_channels: int, like: torch.Tensor) -> torch.Tensor:
        """``(C,)`` class weights α (ones when none were given) on ``like``'s device and dtype."""
        if self.class_weights is None:
            return torch.ones(num_channels, dtype=like.dtype, device=like.device)
        return self.class_weights.to(device=like.device, dtype=like.dtype)

    def rows(self, statistics: ClassStatistics, num_channels: int) -> torch.Tensor:
        """``(R,)`` loss per row from statistics over ``num_channels`` channels."""
        like = statistics.intersection
        scored = scored_channels(num_channels, self.include_background, self.ignore_index, like.device)
        return self.rows_from_statistics(statistics, self.user_class_weights(num_channels, like), scored)

    def rows_from_statistics(
        self, statistics: ClassStatistics, class_weights: torch.Tensor, scored: torch.Tensor
    ) -> torch.Tensor:
        """``(R,)`` loss per row from ``(R, C)`` statistics, ``(C,)`` weights and scored mask."""
        raise NotImplementedError
