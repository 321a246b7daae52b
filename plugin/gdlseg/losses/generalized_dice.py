"""Class-weighted generalized Dice loss (Sudre et al. 2017), a drop-in for MONAI's GeneralizedDiceLoss."""

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
from gdlseg.losses.weights import W_TYPES, generalized_dice_weights

REDUCTIONS = ("mean", "sum", "none")


def overlap_ratio(
    weighted_intersection: torch.Tensor,
    weighted_total: torch.Tensor,
    smooth_nr: float,
    smooth_dr: float,
) -> torch.Tensor:
    """``(2·I + smooth_nr) / (P + T + smooth_dr)``, defined as 1 where the denominator is 0
    (nothing to score and no smoothing): an empty row then costs nothing."""
    numerator = 2.0 * weighted_intersection + smooth_nr
    denominator = weighted_total + smooth_dr
    defined = denominator != 0
    safe = torch.where(defined, denominator, torch.ones_like(denominator))
    return torch.where(defined, numerator / safe, torch.ones_like(numerator))


def complement_statistics(statistics: ClassStatistics) -> ClassStatistics:
    """Statistics of the complements ``1 − p`` against ``1 − t`` over the valid voxels:
    ``Ī = N − P − T + I``, ``P̄ = N − P``, ``T̄ = N − T`` (exact for ``P = Σp`` and ``T = Σt``)."""
    intersection, prediction, target, voxels = statistics
    return ClassStatistics(
        voxels - prediction - target + intersection, voxels - prediction, voxels - target, voxels
    )


def generalized_dice_from_statistics(
    statistics: ClassStatistics,
    w_type: str,
    class_weights: torch.Tensor,
    scored: torch.Tensor,
    normalize_weights: bool,
    smooth_nr: float,
    smooth_dr: float,
) -> torch.Tensor:
    """Generalized Dice loss per row from per-class statistics.

        GDL = 1 − (2 Σ_c w_c I_c + smooth_nr) / (Σ_c w_c (P_c + T_c) + smooth_dr)

    with ``w`` from :func:`gdlseg.losses.weights.generalized_dice_weights`.

    Empty-foreground policy (``normalize_weights=True``): a row in which every scored class is
    absent from the target (e.g. a background-only patch with ``include_background=False``) is
    scored by the same formula on the complements ``1 − p`` vs ``1 − t`` of the scored classes,
    weighted by the normalised class weights. A Dice term on absent classes alone is flat (its
    gradient comes only from the smoothing, ~1e-9); the complement Dice punishes every false
    positive with a gradient of ordinary size and is 0 for a perfect (empty) prediction. For softmax
    with one foreground class it is exactly the Dice of the background channel.
    Without ``normalize_weights`` such rows follow MONAI: all weights 0, loss ≈ 0, no gradient.

    Args:
        statistics: ``(R, C)`` statistics (``squared_pred`` off).
        w_type: "square", "simple" or "uniform".
        class_weights: ``(C,)`` user class weights α.
        scored: ``(C,)`` bool, the channels that count.
        normalize_weights, smooth_nr, smooth_dr: see :class:`ClassWeightedGeneralizedDiceLoss`.

    Returns:
        ``(R,)`` loss per row.
    """
    weights, empty = generalized_dice_weights(statistics.target, w_type, class_weights, scored, normalize_weights)
    weights = weights.to(statistics.intersection.dtype)
    ratio = overlap_ratio(
        (weights * statistics.intersection).sum(dim=1),
        (weights * (statistics.prediction + statistics.target)).sum(dim=1),
        smooth_nr,
        smooth_dr,
    )
    if normalize_weights:
        complement = complement_statistics(statistics)
        alpha = torch.where(scored, class_weights, torch.zeros_like(class_weights)).to(weights.dtype)
        alpha = alpha / alpha.sum().clamp_min(torch.finfo(alpha.dtype).tiny)
        complement_ratio = overlap_ratio(
            (alpha * complement.intersection).sum(dim=1),
            (alpha * (complement.prediction + complement.target)).sum(dim=1),
            smooth_nr,
            smooth_dr,
        )
        ratio = torch.where(empty.squeeze(1), complement_ratio, ratio)
    return 1.0 - ratio


def reduce_rows(rows: torch.Tensor, reduction: str, spatial_dims: int) -> torch.Tensor:
    """Reduce ``(R,)`` row losses; ``"none"`` keeps the input's rank: ``(R, 1, 1, …)``."""
    if reduction == "mean":
        return rows.mean()
    if reduction == "sum":
        return rows.sum()
    return rows.view(rows.shape[0], 1, *([1] * spatial_dims))


class ClassWeightedGeneralizedDiceLoss(nn.Module):
    """Generalized Dice loss with user class weights on top of the volume weights.

    Sudre, C. et al. (2017) Generalised Dice overlap as a deep learning loss function for highly
    unbalanced segmentations. DLMIA 2017.

        w_c = α_c · g(V_c),  g(V) = 1/V², 1/V or 1
        GDL = 1 − (2 Σ_c w_c Σ_v p_cv t_cv + smooth_nr) / (Σ_c w_c Σ_v (p_cv + t_cv) + smooth_dr)

    per sample, or over the whole batch with ``batch=True``. ``α`` are the user's ``class_weights``,
    ``V_c`` the target volume of class c over valid (not ignored) voxels. Absent classes take the
    largest finite ``g`` of their row. With ``normalize_weights`` the weights of a row sum to 1.

    Shapes: ``input`` ``(B, C, *spatial)`` (1–3 spatial dims, any float dtype); ``target``
    ``(B, 1, *spatial)`` label map with ``to_onehot_y=True``, else ``(B, C, *spatial)``.
    Output: a scalar, or with ``reduction="none"`` ``(B, 1, 1, …)`` (``(1, 1, 1, …)`` with ``batch``).

    Compatibility: with ``class_weights=None, normalize_weights=False`` (and no ``ignore_index``)
    the value and the input gradient equal MONAI's ``GeneralizedDiceLoss``, edge cases included.

    Differences from MONAI, all on by default:

    - weights normalised per row, so the default smoothing no longer biases the value;
    - statistics accumulated in float32 (float64 stays float64), autocast disabled inside: fp16 /
      bf16 inputs give a finite loss;
    - weights are computed under ``no_grad`` without in-place edits: the target may require grad;
    - ``ignore_index`` (zero gradient on ignored voxels);
    - background-only rows with ``include_background=False`` still punish false positives (see
      :func:`generalized_dice_from_statistics` for the policy);
    - ``reduction="none"`` keeps the input's rank in both batch modes;
    - label values outside ``[0, C)`` raise ``ValueError`` instead of a device assert or garbage;
    - softmax on a label map never builds a one-hot tensor and keeps only the logits for backward.

    Args:
        include_background: score channel 0. If False, it still takes part in the softmax.
        to_onehot_y: ``target`` is a ``(B, 1, …)`` label map.
        sigmoid: apply a sigmoid to ``input``.
        softmax: apply a softmax over channels to ``input``.
        other_act: any other activation callable (exclusive with the two above).
        w_type: "square" (1/V²), "simple" (1/V) or "uniform" (1).
        reduction: "mean", "sum" or "none" over rows.
        smooth_nr: added to the numerator.
        smooth_dr: added to the denominator.
        batch: compute one loss over the whole batch instead of one per sample.
        soft_label: use the soft-label intersection ``(Σ|p| + Σ|t| − Σ|p − t|)/2`` for soft targets.
        class_weights: one finite weight >= 0 per input channel, background included even when it is
            not scored; ``None`` means all ones. Equal weights change nothing.
        normalize_weights: divide each row's weights by their sum (recommended; False reproduces MONAI).
        ignore_index: label value whose voxels are ignored (see :mod:`gdlseg.losses.inputs`).
        validate_labels: check label-map values (one host sync per call on GPU).

    Raises:
        ValueError: on bad arguments at construction; on shape mismatches, wrong class-weight count or
            bad label values in ``forward``.
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
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
    ) -> None:
        super().__init__()
        check_activation(sigmoid, softmax, other_act)
        self.include_background = bool(include_background)
        self.to_onehot_y = bool(to_onehot_y)
        self.sigmoid = bool(sigmoid)
        self.softmax = bool(softmax)
        self.other_act = other_act
        self.w_type = choose_option("w_type", str(w_type).lower(), W_TYPES)
        self.reduction = choose_option("reduction", str(reduction).lower(), REDUCTIONS)
        self.smooth_nr = non_negative_float("smooth_nr", smooth_nr)
        self.smooth_dr = non_negative_float("smooth_dr", smooth_dr)
        self.batch = bool(batch)
        self.soft_label = bool(soft_label)
        self.normalize_weights = bool(normalize_weights)
        self.ignore_index = check_ignore_index(ignore_index)
        self.validate_labels = bool(validate_labels)
        weights = class_weight_tensor(class_weights)
        check_some_class_weighted(weights, self.include_background, self.ignore_index)
        self.register_buffer("class_weights", weights)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``input`` ``(B, C, *spatial)`` against ``target`` (see the class docstring)."""
        check_shapes(input, target)
        check_class_weight_count(self.class_weights, input.shape[1])
        with autocast_disabled(input):
            parsed = parse_target(target, input.shape[1], self.to_onehot_y, self.ignore_index, self.validate_labels)
            return self.loss_from_target(input, parsed)

    def loss_from_target(self, input: torch.Tensor, target: LossTarget) -> torch.Tensor:
        """The reduced loss for an already parsed target (shared with the Dice+CE compound)."""
        statistics = class_statistics(
            input, target, self.sigmoid, self.softmax, self.other_act, False, self.soft_label, self.batch
        )
        num_channels = input.shape[1]
        scored = scored_channels(num_channels, self.include_background, self.ignore_index, input.device)
        alpha = self.class_weights if self.class_weights is not None else torch.ones(num_channels)
        rows = generalized_dice_from_statistics(
            statistics,
            self.w_type,
            alpha.to(device=input.device, dtype=statistics.intersection.dtype),
            scored,
            self.normalize_weights,
            self.smooth_nr,
            self.smooth_dr,
        )
        return reduce_rows(rows, self.reduction, input.ndim - 2)
