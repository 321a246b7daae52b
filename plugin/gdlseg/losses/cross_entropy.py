"""Class-weighted cross-entropy on the same parsed targets and statistics as the Dice losses.

For voxel v with target ``t_v`` and the user's class weights α, the voxel weight is
``ω_v = Σ_c α_c t_cv`` (``α_y`` for a label map, as in ``torch.nn.functional.cross_entropy``):

    CE_row = Σ_v −Σ_c α_c t_cv log softmax(z_v)_c  /  Σ_v ω_v  =  cross_entropy / Σ_c α_c T_c

over the valid voxels (``Σ_v ω_v = Σ_c α_c T_c``). The numerator is the
``cross_entropy`` field of :class:`~gdlseg.losses.statistics.ClassStatistics`; the denominator
comes from the same statistics' target volumes ``T``. With ``sigmoid`` (multi-label) it is the
binary cross-entropy of every channel: ``Σ_c α_c Σ_v BCE_cv / (Σ_c α_c · N)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gdlseg.losses.statistics import ClassStatistics, LossTarget


def cross_entropy_sum(
    logits: torch.Tensor, target: LossTarget, class_weights: torch.Tensor, sigmoid: bool
) -> torch.Tensor:
    """``(B,)`` numerator of the weighted cross-entropy through ordinary autograd (the fused
    softmax path of :mod:`gdlseg.losses.statistics` computes the same sum for label maps).

    Args:
        logits: ``(B, C, N)`` raw outputs in the compute dtype.
        target: a parsed target.
        class_weights: ``(C,)`` α in the compute dtype.
        sigmoid: binary cross-entropy per channel instead of the softmax cross-entropy.
    """
    if sigmoid and target.dense is not None:
        per_channel = F.binary_cross_entropy_with_logits(logits, target.dense.to(logits.dtype), reduction="none")
        per_voxel = torch.einsum("bcn,c->bn", per_channel, class_weights)
    elif sigmoid:
        # BCE(z, t) = softplus(z) − z·t: for a one-hot t the second term is α_y·z_y alone, so no
        # dense one-hot is built (or kept for backward).
        index = target.labels.unsqueeze(1)
        true_class_logit = logits.gather(1, index).squeeze(1)
        # A product with the (constant) weights, not einsum, which would keep softplus(z) for backward.
        per_voxel = (F.softplus(logits) * class_weights.unsqueeze(1)).sum(dim=1)
        per_voxel = per_voxel - class_weights[target.labels] * true_class_logit
    elif target.labels is not None:
        per_voxel = F.cross_entropy(logits, target.labels, weight=class_weights, reduction="none")
    else:
        log_probabilities = F.log_softmax(logits, dim=1)
        per_voxel = -torch.einsum("bcn,bcn,c->bn", target.dense.to(logits.dtype), log_probabilities, class_weights)
    if target.valid is not None:
        per_voxel = per_voxel * target.valid
    return per_voxel.sum(dim=1)


def cross_entropy_from_statistics(
    statistics: ClassStatistics, class_weights: torch.Tensor, sigmoid: bool
) -> torch.Tensor:
    """``(R,)`` weighted mean cross-entropy per row; a row with zero total weight costs 0."""
    if sigmoid:
        denominator = class_weights.sum() * statistics.voxels.squeeze(1)
    else:
        denominator = (statistics.target * class_weights).sum(dim=1)
    defined = denominator > 0
    safe = torch.where(defined, denominator, torch.ones_like(denominator))
    return torch.where(defined, statistics.cross_entropy / safe, torch.zeros_like(safe))
