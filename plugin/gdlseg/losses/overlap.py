"""Overlap ratios from the per-class sums of :mod:`gdlseg.losses.statistics`: the Dice ratio, the Tversky
denominator that generalises it, and the focal exponent applied to a loss. Pure functions on tensors of
any shape (``(R, C)`` per class or ``(R,)`` per row), shared by every loss and by the evaluation's Dice."""

from __future__ import annotations

import torch


def dice_ratio(
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


def tversky_total(
    intersection: torch.Tensor,
    prediction: torch.Tensor,
    target: torch.Tensor,
    false_positive_weight: float = 0.5,
    false_negative_weight: float = 0.5,
) -> torch.Tensor:
    """The denominator that turns :func:`dice_ratio` into the Tversky index (Tversky 1977; Salehi et al. 2017).

    With ``FP = P − I`` and ``FN = T − I`` (the soft false positives and false negatives; exact counts
    for hard inputs), α = ``false_positive_weight`` and β = ``false_negative_weight``:

        TI = 2I / (2I + 2α·FP + 2β·FN) = 2I / (2α·P + 2β·T + 2(1 − α − β)·I)

    For α = β = ½ this is the Dice ``2I / (P + T)``, and ``P + T`` is returned as is, so the Dice losses
    are unchanged to the last bit. β > α punishes missed voxels more than spurious ones (recall of
    small structures); MONAI's ``TverskyLoss`` uses the same α (FP) / β (FN) convention.
    """
    if false_positive_weight == 0.5 and false_negative_weight == 0.5:
        return prediction + target
    return (
        2.0 * false_positive_weight * prediction
        + 2.0 * false_negative_weight * target
        + 2.0 * (1.0 - false_positive_weight - false_negative_weight) * intersection
    )


def focal(loss: torch.Tensor, exponent: float) -> torch.Tensor:
    """``loss ** exponent`` (Focal Tversky, Abraham & Khan 2019, whose γ = 4/3 is ``exponent`` = 1/γ = 0.75);
    ``exponent`` 1 returns ``loss`` itself. Losses are clamped at a tiny positive value first: for an
    exponent below 1 the derivative at 0 is infinite, and a perfectly scored class must give 0, not NaN."""
    if exponent == 1.0:
        return loss
    return loss.clamp_min(torch.finfo(loss.dtype).tiny) ** exponent
