"""Class-weighted generalized Dice loss (Sudre et al. 2017), a drop-in for MONAI's GeneralizedDiceLoss."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from gdlseg.losses._options import choose_option
from gdlseg.losses.base import OverlapLoss
from gdlseg.losses.overlap import dice_ratio, focal, tversky_total
from gdlseg.losses.statistics import ClassStatistics
from gdlseg.losses.weights import W_TYPES, check_max_ratio, generalized_dice_weights


def complement_statistics(statistics: ClassStatistics) -> ClassStatistics:
    """Statistics of the complements ``1 − p`` against ``1 − t`` over the valid voxels:
    ``Ī = N − P − T + I``, ``P̄ = N − P``, ``T̄ = N − T`` (exact for ``P = Σp`` and ``T = Σt``)."""
    intersection, prediction, target, voxels = statistics[:4]
    return ClassStatistics(voxels - prediction - target + intersection, voxels - prediction, voxels - target, voxels)


def generalized_dice_from_statistics(
    statistics: ClassStatistics,
    w_type: str,
    class_weights: torch.Tensor,
    scored: torch.Tensor,
    normalize_weights: bool,
    smooth_nr: float,
    smooth_dr: float,
    max_weight_ratio: float | None = None,
    tversky_alpha: float = 0.5,
    tversky_beta: float = 0.5,
    focal_exponent: float = 1.0,
) -> torch.Tensor:
    """Generalized Dice loss per row from per-class statistics.

        GDL = 1 − (2 Σ_c w_c I_c + smooth_nr) / (Σ_c w_c (P_c + T_c) + smooth_dr)

    with ``w`` from :func:`gdlseg.losses.weights.generalized_dice_weights`. With Tversky weights α
    (false positives) and β (false negatives) ``P_c + T_c`` becomes ``2α·P_c + 2β·T_c + 2(1 − α − β)·I_c``
    (:func:`gdlseg.losses.overlap.tversky_total`: the generalized Tversky index, Salehi et al. 2017),
    and with a focal exponent γ the row loss is ``GDL ** γ`` (Focal Tversky, Abraham & Khan 2019).
    α = β = ½ and γ = 1 are the GDL exactly.

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
        normalize_weights, smooth_nr, smooth_dr, max_weight_ratio, tversky_alpha, tversky_beta,
            focal_exponent: see :class:`ClassWeightedGeneralizedDiceLoss`.

    Returns:
        ``(R,)`` loss per row.
    """
    weights, empty = generalized_dice_weights(
        statistics.target, w_type, class_weights, scored, normalize_weights, max_weight_ratio
    )
    weights = weights.to(statistics.intersection.dtype)
    total = tversky_total(
        statistics.intersection, statistics.prediction, statistics.target, tversky_alpha, tversky_beta
    )
    ratio = dice_ratio(
        (weights * statistics.intersection).sum(dim=1), (weights * total).sum(dim=1), smooth_nr, smooth_dr
    )
    if normalize_weights:
        complement = complement_statistics(statistics)
        alpha = torch.where(scored, class_weights, torch.zeros_like(class_weights)).to(weights.dtype)
        alpha = alpha / alpha.sum().clamp_min(torch.finfo(alpha.dtype).tiny)
        # The complements' false positives are the original false negatives: the weights swap.
        complement_total = tversky_total(
            complement.intersection, complement.prediction, complement.target, tversky_beta, tversky_alpha
        )
        complement_ratio = dice_ratio(
            (alpha * complement.intersection).sum(dim=1), (alpha * complement_total).sum(dim=1), smooth_nr, smooth_dr
        )
        ratio = torch.where(empty.squeeze(1), complement_ratio, ratio)
    return focal(1.0 - ratio, focal_exponent)


class ClassWeightedGeneralizedDiceLoss(OverlapLoss):
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
        max_weight_ratio: cap R on the ratio between two non-zero class weights of a row (each class
            gets at least ``max_c w_c / R``); ``None`` (default) is Sudre's GDL. Square weights alone
            let a tiny class outweigh a large organ ~10⁴-fold, which drops the organ from the loss.
        tversky_alpha: weight α >= 0 of the false positives (default ½).
        tversky_beta: weight β >= 0 of the false negatives (default ½; β > α favours recall, e.g. 0.3 / 0.7
            for small lesions). α = β = ½ is the Dice exactly; α = β = 1 the Jaccard index.
        focal_exponent: γ > 0, the row loss is raised to this power (default 1: off). Below 1 it raises
            the gradient of rows whose loss is already small (Abraham & Khan's Focal Tversky: 0.75, their
            γ = 4/3); above 1 it concentrates on rows with large losses.

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
        max_weight_ratio: float | None = None,
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
        self.w_type = choose_option("w_type", w_type, W_TYPES)
        self.normalize_weights = bool(normalize_weights)
        self.max_weight_ratio = check_max_ratio(max_weight_ratio)

    def rows_from_statistics(
        self, statistics: ClassStatistics, class_weights: torch.Tensor, scored: torch.Tensor
    ) -> torch.Tensor:
        """``(R,)`` generalized Dice loss per row."""
        return generalized_dice_from_statistics(
            statistics,
            self.w_type,
            class_weights,
            scored,
            self.normalize_weights,
            self.smooth_nr,
            self.smooth_dr,
            self.max_weight_ratio,
            self.tversky_alpha,
            self.tversky_beta,
            self.focal_exponent,
        )
