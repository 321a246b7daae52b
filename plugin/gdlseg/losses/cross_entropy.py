"""Class-weighted cross-entropy per row, on the same parsed targets as the Dice losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gdlseg.losses.inputs import LossTarget
from gdlseg.losses.statistics import compute_dtype


def _one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    return F.one_hot(labels, num_classes).movedim(-1, 1).to(dtype)


def weighted_cross_entropy_rows(
    logits: torch.Tensor,
    target: LossTarget,
    class_weights: torch.Tensor | None,
    sigmoid: bool = False,
    batch: bool = False,
) -> torch.Tensor:
    """Weighted mean cross-entropy per row (sample, or the whole batch with ``batch``).

    Softmax (default): for voxel v with target ``t_v`` and voxel weight ``ω_v = Σ_c α_c t_cv``
    (``α_y`` for a label map, as in ``torch.nn.functional.cross_entropy``),

        CE = Σ_v −Σ_c α_c t_cv log softmax(z_v)_c  /  Σ_v ω_v      over valid voxels.

    Sigmoid (multi-label): binary cross-entropy per channel, ``Σ_c α_c Σ_v BCE_cv / (Σ_c α_c · N)``.
    Ignored voxels contribute nothing; a row with zero total weight costs 0.

    Args:
        logits: ``(B, C, N)`` raw network outputs.
        target: parsed target (label map or dense).
        class_weights: ``(C,)`` α, or None for ones.

    Returns:
        ``(R,)`` loss per row.
    """
    logits = logits.to(compute_dtype(logits.dtype))
    batch_size, num_classes, _ = logits.shape
    alpha = (
        torch.ones(num_classes, dtype=logits.dtype, device=logits.device)
        if class_weights is None
        else class_weights.to(device=logits.device, dtype=logits.dtype)
    )
    valid = target.valid
    if sigmoid:
        with torch.no_grad():
            dense = target.dense if target.dense is not None else _one_hot(target.labels, num_classes, logits.dtype)
        per_voxel = F.binary_cross_entropy_with_logits(logits, dense.to(logits.dtype), reduction="none")
        per_voxel = torch.einsum("bcn,c->bn", per_voxel, alpha)
        voxel_weight = torch.full_like(per_voxel, float(alpha.sum()))
    elif target.labels is not None:
        per_voxel = F.cross_entropy(logits, target.labels, weight=alpha, reduction="none")
        voxel_weight = alpha[target.labels]
    else:
        dense = target.dense.to(logits.dtype)
        per_voxel = -torch.einsum("bcn,bcn,c->bn", dense, F.log_softmax(logits, dim=1), alpha)
        voxel_weight = torch.einsum("bcn,c->bn", dense.detach(), alpha)
    if valid is not None:
        per_voxel = per_voxel * valid
        voxel_weight = voxel_weight * valid
    numerator = per_voxel.sum(dim=1)
    denominator = voxel_weight.sum(dim=1)
    if batch:
        numerator, denominator = numerator.sum(dim=0, keepdim=True), denominator.sum(dim=0, keepdim=True)
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, numerator / safe, torch.zeros_like(numerator))
