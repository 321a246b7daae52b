"""Per-class overlap statistics shared by every loss and metric of gdlseg.

For probabilities ``p`` and a target ``t`` over the valid voxels ``v`` of one sample (or of the
whole batch) and one class ``c``:

    I_c = Σ_v p_cv · t_cv          (soft intersection; the true positives for hard inputs)
    P_c = Σ_v p_cv   or Σ_v p_cv²  (``squared_pred``)
    T_c = Σ_v t_cv   or Σ_v t_cv²  (``squared_pred``)
    N   = number of valid voxels

so that the soft Dice of a class is ``2·I_c / (P_c + T_c)``. Statistics are accumulated in
float32 (float64 inputs stay float64) whatever the input dtype: fp16 sums of a 64³ patch overflow.

Targets come in two forms: a label map ``(B, 1, *spatial)`` holding class indices, which is never
expanded into a dense one-hot tensor, or a dense ``(B, C, *spatial)`` one-hot / soft target.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

# Spatial chunk (in elements of a (B, C, chunk) slab) for the in-place backward of the fused path.
_BACKWARD_CHUNK_ELEMENTS = 1 << 21


class ClassStatistics(NamedTuple):
    """Per-class sums, each of shape ``(R, C)``: R = batch size, or 1 once reduced over the batch.

    ``voxels`` has shape ``(R, 1)`` and counts the valid (not ignored) voxels of each row.
    """

    intersection: torch.Tensor
    prediction: torch.Tensor
    target: torch.Tensor
    voxels: torch.Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are accumulated in: float32, or float64 for float64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def sum_by_label(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sum ``values`` per (row, label): ``out[b, c] = Σ_v values[b, v] · [labels[b, v] == c]``.

    Args:
        values: ``(B, N)`` floating tensor; differentiable.
        labels: ``(B, N)`` int64 class indices in ``[0, num_classes)``.
        num_classes: C.

    Returns:
        ``(B, C)`` tensor of ``values``' dtype. No one-hot tensor is built.
    """
    batch = labels.shape[0]
    offsets = torch.arange(batch, device=labels.device).unsqueeze(1) * num_classes
    flat_index = (labels + offsets).reshape(-1)
    sums = torch.zeros(batch * num_classes, dtype=values.dtype, device=values.device)
    return sums.index_add(0, flat_index, values.reshape(-1)).view(batch, num_classes)


def _voxel_counts(valid: torch.Tensor | None, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    batch, voxels = shape[0], shape[-1]
    if valid is None:
        return torch.full((batch, 1), float(voxels), dtype=like.dtype, device=like.device)
    return valid.sum(dim=1, keepdim=True).to(like.dtype)


def _target_counts(labels: torch.Tensor, valid: torch.Tensor | None, num_classes: int, dtype: torch.dtype):
    ones = valid.to(dtype) if valid is not None else torch.ones(labels.shape, dtype=dtype, device=labels.device)
    return sum_by_label(ones, labels, num_classes)


def label_map_statistics(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor | None,
    squared_pred: bool = False,
    soft_label: bool = False,
) -> ClassStatistics:
    """Statistics of probabilities against a label map, differentiable through ``probabilities``.

    Args:
        probabilities: ``(B, C, N)`` in the compute dtype.
        labels: ``(B, N)`` int64 in ``[0, C)``; ignored voxels may hold any valid index.
        valid: ``(B, N)`` bool, False at ignored voxels, or None when nothing is ignored.
        squared_pred: use ``Σ p²`` for ``P`` (for hard labels ``Σ t² = Σ t``).
        soft_label: the L1 forms of :func:`dense_target_statistics`; they differ from the plain ones
            only for probabilities outside [0, 1] (an activation such as tanh).
    """
    num_classes = probabilities.shape[1]
    if valid is not None:
        probabilities = probabilities * valid.unsqueeze(1)
    true_class_prob = probabilities.gather(1, labels.unsqueeze(1)).squeeze(1)
    use_l1 = soft_label and not squared_pred
    if use_l1:
        # (|p| + |1| - |p - 1|) / 2 at the voxels of class c; 0 elsewhere.
        true_class_prob = (true_class_prob.abs() + 1 - (true_class_prob - 1).abs()) / 2
        if valid is not None:
            true_class_prob = true_class_prob * valid
    intersection = sum_by_label(true_class_prob, labels, num_classes)
    if squared_pred:
        prediction = torch.einsum("bcn,bcn->bc", probabilities, probabilities)
    elif use_l1:
        prediction = probabilities.abs().sum(dim=2)
    else:
        prediction = probabilities.sum(dim=2)
    with torch.no_grad():
        target = _target_counts(labels, valid, num_classes, probabilities.dtype)
        voxels = _voxel_counts(valid, probabilities.shape, probabilities)
    return ClassStatistics(intersection, prediction, target, voxels)


def dense_target_statistics(
    probabilities: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    squared_pred: bool = False,
    soft_label: bool = False,
) -> ClassStatistics:
    """Statistics of probabilities against a dense ``(B, C, N)`` one-hot or soft target.

    Differentiable through both ``probabilities`` and ``target`` (soft targets from a teacher may
    require grad). With ``soft_label`` (and not ``squared_pred``) the intersection is
    ``(Σ|p| + Σ|t| − Σ|p − t|) / 2``, which equals ``Σ p·t`` for hard targets and stays a proper
    overlap for soft ones (MONAI's ``soft_label``; ``P`` and ``T`` are then L1 norms). With
    ``squared_pred`` both forms coincide.
    """
    if valid is not None:
        mask = valid.unsqueeze(1)
        probabilities = probabilities * mask
        target = target * mask
    if squared_pred:
        prediction = torch.einsum("bcn,bcn->bc", probabilities, probabilities)
        target_sum = torch.einsum("bcn,bcn->bc", target, target)
        intersection = torch.einsum("bcn,bcn->bc", probabilities, target)
    elif soft_label:
        prediction = probabilities.abs().sum(dim=2)
        target_sum = target.abs().sum(dim=2)
        intersection = (prediction + target_sum - (probabilities - target).abs().sum(dim=2)) / 2
    else:
        prediction = probabilities.sum(dim=2)
        target_sum = target.sum(dim=2)
        intersection = torch.einsum("bcn,bcn->bc", probabilities, target)
    with torch.no_grad():
        voxels = _voxel_counts(valid, probabilities.shape, prediction)
    return ClassStatistics(intersection, prediction, target_sum, voxels)


class _SoftmaxLabelMapStatistics(torch.autograd.Function):
    """Fused softmax + label-map statistics that saves only the logits and the labels.

    Forward computes ``p = softmax(z)`` in a temporary, reduces it to ``I`` and ``P`` and frees it.
    Backward recomputes ``p`` and turns that buffer into the gradient in place:

        ∂L/∂p_c = g^P_c · (1 or 2 p_c) + g^I_c · [y = c]
        ∂L/∂z_c = p_c · (∂L/∂p_c − Σ_k p_k ∂L/∂p_k)      (zero at ignored voxels)

    so the extra memory of forward + backward is about one logits-sized buffer (the gradient itself).
    """

    @staticmethod
    def forward(ctx, logits, labels, valid, squared_pred):  # type: ignore[override]
        dtype = compute_dtype(logits.dtype)
        probabilities = torch.softmax(logits.to(dtype), dim=1)
        if valid is not None:
            probabilities.mul_(valid.unsqueeze(1))
        true_class_prob = probabilities.gather(1, labels.unsqueeze(1)).squeeze(1)
        intersection = sum_by_label(true_class_prob, labels, logits.shape[1])
        if squared_pred:
            prediction = torch.einsum("bcn,bcn->bc", probabilities, probabilities)
        else:
            prediction = probabilities.sum(dim=2)
        ctx.squared_pred = squared_pred
        ctx.save_for_backward(logits, labels, valid)
        return intersection, prediction

    @staticmethod
    def backward(ctx, grad_intersection, grad_prediction):  # type: ignore[override]
        logits, labels, valid = ctx.saved_tensors
        dtype = compute_dtype(logits.dtype)
        gradient = torch.softmax(logits.to(dtype), dim=1)
        if valid is not None:
            gradient.mul_(valid.unsqueeze(1))
        grad_intersection = torch.zeros_like(grad_intersection) if grad_intersection is None else grad_intersection
        grad_prediction = torch.zeros_like(grad_prediction) if grad_prediction is None else grad_prediction
        grad_intersection = grad_intersection.to(dtype)
        grad_prediction = grad_prediction.to(dtype)
        batch, channels, voxels = gradient.shape
        index = labels.unsqueeze(1)
        true_class_term = gradient.gather(1, index).squeeze(1) * grad_intersection.gather(1, labels)
        chunk = max(1, _BACKWARD_CHUNK_ELEMENTS // max(1, batch * channels))
        scale = grad_prediction.unsqueeze(2)
        for start in range(0, voxels, chunk):
            probs = gradient[:, :, start : start + chunk]
            grad_probs = scale * probs * 2 if ctx.squared_pred else scale
            weighted_sum = (probs * grad_probs).sum(dim=1, keepdim=True)
            weighted_sum += true_class_term[:, start : start + chunk].unsqueeze(1)
            probs.mul_(grad_probs - weighted_sum)
        gradient.scatter_add_(1, index, true_class_term.unsqueeze(1))
        return gradient.to(logits.dtype), None, None, None


def softmax_label_map_statistics(
    logits: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor | None,
    squared_pred: bool = False,
) -> ClassStatistics:
    """Like :func:`label_map_statistics` on ``softmax(logits, dim=1)``, with the memory-lean
    fused autograd function: nothing but ``logits`` and ``labels`` is kept for backward.

    Args:
        logits: ``(B, C, N)`` raw network outputs of any floating dtype.
        labels, valid, squared_pred: as in :func:`label_map_statistics`.
    """
    intersection, prediction = _SoftmaxLabelMapStatistics.apply(logits, labels, valid, squared_pred)
    with torch.no_grad():
        target = _target_counts(labels, valid, logits.shape[1], intersection.dtype)
        voxels = _voxel_counts(valid, logits.shape, intersection)
    return ClassStatistics(intersection, prediction, target, voxels)


def reduce_over_batch(statistics: ClassStatistics) -> ClassStatistics:
    """Sum per-sample statistics over the batch: ``(B, C) → (1, C)``.

    This is the single place where batch statistics are combined; a reduction across the
    processes of a distributed run belongs here, so that batch-mode losses see the global batch.
    """
    return ClassStatistics(*(field.sum(dim=0, keepdim=True) for field in statistics))


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


def hard_label_statistics(
    prediction: torch.Tensor,
    reference: torch.Tensor,
    num_classes: int,
    valid: torch.Tensor | None = None,
) -> ClassStatistics:
    """Counts for two label maps ``(B, N)`` (int64 in ``[0, C)``): ``I`` = true positives,
    ``P`` = TP + FP, ``T`` = TP + FN, per class, so ``2TP / (2TP + FP + FN) = 2I / (P + T)``."""
    dtype = torch.float64
    weight = valid.to(dtype) if valid is not None else torch.ones(reference.shape, dtype=dtype, device=reference.device)
    matches = (prediction == reference).to(dtype) * weight
    return ClassStatistics(
        sum_by_label(matches, reference, num_classes),
        sum_by_label(weight, prediction, num_classes),
        sum_by_label(weight, reference, num_classes),
        weight.sum(dim=1, keepdim=True),
    )
