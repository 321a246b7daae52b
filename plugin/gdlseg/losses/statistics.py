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

from gdlseg.losses.distributed import statistics_world_size, sum_over_processes


class ClassStatistics(NamedTuple):
    """Per-class sums, each of shape ``(R, C)``: R = batch size, or 1 once reduced over the batch.

    ``voxels`` ``(R, 1)`` counts the valid (not ignored) voxels of each row. ``cross_entropy``
    ``(R,)``, when requested, is ``Σ_v ω_v · CE_v``: the class-weighted cross-entropy summed over
    the valid voxels (see :mod:`gdlseg.losses.cross_entropy`).
    """

    intersection: torch.Tensor
    prediction: torch.Tensor
    target: torch.Tensor
    voxels: torch.Tensor
    cross_entropy: torch.Tensor | None = None


class LossTarget(NamedTuple):
    """A target flattened to ``N`` voxels: exactly one of ``labels`` / ``dense`` is set.

    labels: ``(B, N)`` int64 in ``[0, C)`` (0 at ignored voxels). dense: ``(B, C, N)``.
    valid: ``(B, N)`` bool, False at ignored voxels; None when nothing is ignored.
    """

    labels: torch.Tensor | None
    dense: torch.Tensor | None
    valid: torch.Tensor | None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are accumulated in: float32, or float64 for float64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def flat_label_index(labels: torch.Tensor, valid: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """``(B·N,)`` int64 index ``b·C + label`` of every voxel; ignored voxels point at the extra
    slot ``B·C``, which :func:`sum_by_label` and :func:`count_by_label` drop."""
    batch = labels.shape[0]
    offsets = torch.arange(batch, device=labels.device).unsqueeze(1) * num_classes
    index = labels + offsets
    if valid is not None:
        index = torch.where(valid, index, batch * num_classes)
    return index.reshape(-1)


def sum_by_label(values: torch.Tensor, flat_index: torch.Tensor, batch: int, num_classes: int) -> torch.Tensor:
    """``out[b, c] = Σ_v values[b, v] · [label_bv = c]`` over valid voxels, differentiable in
    ``values`` ``(B, N)``; no one-hot tensor is built. Returns ``(B, C)`` of ``values``' dtype."""
    sums = torch.zeros(batch * num_classes + 1, dtype=values.dtype, device=values.device)
    return sums.index_add(0, flat_index, values.reshape(-1))[:-1].view(batch, num_classes)


def count_by_label(flat_index: torch.Tensor, batch: int, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Number of valid voxels of each label per row, ``(B, C)`` in ``dtype``."""
    slots = batch * num_classes + 1
    if flat_index.device.type == "cpu":
        counts = torch.bincount(flat_index, minlength=slots)  # the fastest count on CPU
    else:
        counts = count_without_host_sync(flat_index, slots)
    return counts[:-1].view(batch, num_classes).to(dtype)


def count_without_host_sync(flat_index: torch.Tensor, slots: int) -> torch.Tensor:
    """``torch.bincount`` without its device-to-host read of the index range (a GPU sync per call):
    int64 counts of the values of ``flat_index`` in ``[0, slots)``."""
    ones = torch.ones((), dtype=torch.int64, device=flat_index.device).expand(flat_index.numel())
    return torch.zeros(slots, dtype=torch.int64, device=flat_index.device).index_add_(0, flat_index, ones)


def _voxel_counts(valid: torch.Tensor | None, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    batch, voxels = shape[0], shape[-1]
    if valid is None:
        return torch.full((batch, 1), float(voxels), dtype=like.dtype, device=like.device)
    return valid.sum(dim=1, keepdim=True).to(like.dtype)


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
    if valid is not None:
        probabilities = probabilities * valid.unsqueeze(1)
    true_class_prob = probabilities.gather(1, labels.unsqueeze(1)).squeeze(1)
    return _masked_label_map_statistics(probabilities, true_class_prob, labels, valid, squared_pred, soft_label)


def _masked_label_map_statistics(
    probabilities: torch.Tensor,
    true_class_prob: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor | None,
    squared_pred: bool,
    soft_label: bool,
) -> ClassStatistics:
    """:func:`label_map_statistics` for probabilities already zeroed at ignored voxels, given
    ``true_class_prob`` ``(B, N)``: the probability of each voxel's label."""
    batch, num_classes, _ = probabilities.shape
    flat_index = flat_label_index(labels, valid, num_classes)
    use_l1 = soft_label and not squared_pred
    if use_l1:
        # (|p| + |1| - |p - 1|) / 2 at the voxels of class c; 0 elsewhere.
        true_class_prob = (true_class_prob.abs() + 1 - (true_class_prob - 1).abs()) / 2
    intersection = sum_by_label(true_class_prob, flat_index, batch, num_classes)
    if squared_pred:
        prediction = torch.einsum("bcn,bcn->bc", probabilities, probabilities)
    elif use_l1:
        prediction = probabilities.abs().sum(dim=2)
    else:
        prediction = probabilities.sum(dim=2)
    with torch.no_grad():
        target = count_by_label(flat_index, batch, num_classes, probabilities.dtype)
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


class _Softmax(NamedTuple):
    probabilities: torch.Tensor  # (B, C, N), zero at ignored voxels
    true_class: torch.Tensor  # (B, N) p_y, zero at ignored voxels
    true_class_log: torch.Tensor | None  # (B, N) log p_y, when the cross-entropy is wanted


def _masked_softmax(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None, with_log: bool) -> _Softmax:
    """Softmax over channels in a new buffer and the probability of each voxel's label.

    ``with_log`` takes the exact route of the cross-entropy: ``log_softmax`` (stable for any logit
    gap), the true-class log-probabilities gathered from it, then ``exp`` in place.
    """
    index = labels.unsqueeze(1)
    true_class_log = None
    if with_log:
        probabilities = torch.log_softmax(scores, dim=1)
        true_class_log = probabilities.gather(1, index).squeeze(1)
        probabilities.exp_()
        true_class = true_class_log.exp()
    else:
        probabilities = torch.softmax(scores, dim=1)
        true_class = probabilities.gather(1, index).squeeze(1)
    if valid is not None:
        probabilities.mul_(valid.unsqueeze(1))
        true_class.mul_(valid)
    return _Softmax(probabilities, true_class, true_class_log)


class _SoftmaxLabelMapStatistics(torch.autograd.Function):
    """Fused softmax + label-map statistics (and, optionally, the class-weighted cross-entropy).

    Forward computes ``p = softmax(z)`` once, in the compute dtype, and reduces it to ``I`` and
    ``P`` (and ``Σ_v α_y·(−log p_yv)``, from ``log_softmax``). That one buffer and the labels are all that is
    kept for backward, which turns the buffer into the logits' gradient in place:

        ∂L/∂p_c = g^P_c · (1 or 2 p_c) + g^I_c · [y = c]
        ∂L/∂z_c = p_c · (∂L/∂p_c − Σ_k p_k ∂L/∂p_k) + g^CE · α_y · (p_c − [y = c])

    (zero at ignored voxels), so forward + backward need about one logits-sized buffer beyond the
    logits, and that buffer is the gradient autograd must return anyway. A second backward through
    the same graph (``retain_graph=True``) finds the buffer consumed and recomputes the softmax
    from the logits, which are saved anyway.
    """

    @staticmethod
    def forward(ctx, logits, labels, valid, squared_pred, with_cross_entropy, ce_weights):  # type: ignore[override]
        dtype = compute_dtype(logits.dtype)
        scores = logits.to(dtype)
        softmax = _masked_softmax(scores, labels, valid, with_cross_entropy)
        probabilities, true_class_prob = softmax.probabilities, softmax.true_class
        statistics = _masked_label_map_statistics(
            probabilities, true_class_prob, labels, valid, squared_pred, soft_label=False
        )
        cross_entropy = voxel_weight = None
        if with_cross_entropy:
            voxel_weight = _voxel_ce_weight(ce_weights, labels, valid, dtype)
            per_voxel = softmax.true_class_log.neg_()
            cross_entropy = (per_voxel if voxel_weight is None else per_voxel * voxel_weight).sum(dim=1)
        ctx.squared_pred = squared_pred
        ctx.with_cross_entropy = with_cross_entropy
        ctx.save_for_backward(logits, labels, valid, voxel_weight)
        # Not saved tensors: backward overwrites the probabilities, so autograd must not version-check
        # them; keeping p_y spares backward a gather.
        ctx.probabilities = probabilities
        ctx.true_class_prob = true_class_prob
        ctx.mark_non_differentiable(statistics.target, statistics.voxels)
        return (*statistics[:4], cross_entropy)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_intersection, grad_prediction, _grad_target, _grad_voxels, grad_cross_entropy):  # type: ignore[override]
        logits, labels, valid, voxel_weight = ctx.saved_tensors
        gradient, true_class_prob = ctx.probabilities, ctx.true_class_prob
        ctx.probabilities = ctx.true_class_prob = None
        if gradient is None:  # a second backward (retain_graph): the first one consumed the buffer
            gradient, true_class_prob, _ = _masked_softmax(
                logits.to(compute_dtype(logits.dtype)), labels, valid, ctx.with_cross_entropy
            )
        batch, channels, _ = gradient.shape
        dtype = gradient.dtype
        grad_intersection = _zeros_if_none(grad_intersection, (batch, channels), gradient).to(dtype)
        grad_prediction = _zeros_if_none(grad_prediction, (batch, channels), gradient).to(dtype)
        index = labels.unsqueeze(1)
        # Per voxel: the true-class term p_y·g^I_y, minus the cross-entropy weight k = g^CE·ω_v.
        true_class_term = true_class_prob * grad_intersection.gather(1, labels)
        ce_term = None
        if ctx.with_cross_entropy and grad_cross_entropy is not None:
            ce_term = grad_cross_entropy.to(dtype).unsqueeze(1)
            if voxel_weight is not None:
                ce_term = ce_term * voxel_weight
        # shift_v = Σ_c p_c ∂L/∂p_c − k, computed without a (B, C, N) temporary.
        shift = true_class_term.clone()
        for c in range(channels):
            probs = gradient[:, c]
            factor = probs * (2 * grad_prediction[:, c : c + 1]) if ctx.squared_pred else grad_prediction[:, c : c + 1]
            shift.addcmul_(probs, factor)
        if ce_term is not None:
            shift -= ce_term
            true_class_term = true_class_term - ce_term
        # ∂L/∂z_c = p_c·(∂L/∂p_c|_{c≠y} − shift), one channel at a time, in place; one reused
        # (B, N) buffer instead of a fresh allocation per channel.
        factor = torch.empty_like(shift)
        for c in range(channels):
            probs = gradient[:, c]
            scale = grad_prediction[:, c : c + 1]
            if ctx.squared_pred:
                torch.mul(probs, 2 * scale, out=factor).sub_(shift)
            else:
                torch.sub(scale, shift, out=factor)
            probs.mul_(factor)
        gradient.scatter_add_(1, index, true_class_term.unsqueeze(1))
        return gradient.to(logits.dtype), None, None, None, None, None


def _voxel_ce_weight(
    ce_weights: torch.Tensor | None, labels: torch.Tensor, valid: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    """``ω_v = α_y·[v valid]`` ``(B, N)``, or None when every voxel weighs 1."""
    if ce_weights is None:
        return None if valid is None else valid.to(dtype)
    weight = ce_weights.to(dtype).unsqueeze(0).expand(labels.shape[0], -1).gather(1, labels)
    return weight if valid is None else weight * valid


def _zeros_if_none(gradient: torch.Tensor | None, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(shape, dtype=like.dtype, device=like.device) if gradient is None else gradient


def softmax_label_map_statistics(
    logits: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor | None,
    squared_pred: bool = False,
    with_cross_entropy: bool = False,
    cross_entropy_weights: torch.Tensor | None = None,
) -> ClassStatistics:
    """Like :func:`label_map_statistics` on ``softmax(logits, dim=1)``, through the memory-lean
    fused autograd function; ``with_cross_entropy`` also returns the cross-entropy sum
    ``Σ_v α_y · (−log softmax(z_v)_y)`` per row (α = ``cross_entropy_weights`` ``(C,)``, or ones).

    Args:
        logits: ``(B, C, N)`` raw network outputs of any floating dtype.
        labels, valid, squared_pred: as in :func:`label_map_statistics`.
    """
    return ClassStatistics(
        *_SoftmaxLabelMapStatistics.apply(
            logits, labels, valid, squared_pred, with_cross_entropy, cross_entropy_weights
        )
    )


def reduce_over_batch(statistics: ClassStatistics) -> ClassStatistics:
    """Sum per-sample statistics over the batch: ``(B, C) → (1, C)``, and over the processes of a
    distributed run when a process group is initialised.

    This is the single place where batch statistics are combined. In a process group every field
    is also summed over the ranks, differentiably, so that a batch-mode loss is the loss of the
    global batch on every rank and DDP's averaged gradient is the global batch's gradient (the math
    and the policy are in :mod:`gdlseg.losses.distributed`; :func:`gdlseg.losses.distributed.rank_local`
    turns it off).
    """
    summed = [None if field is None else field.sum(dim=0, keepdim=True) for field in statistics]
    if statistics_world_size() > 1:
        summed = sum_over_processes(summed)
    return ClassStatistics(*summed)


def hard_label_statistics(
    prediction: torch.Tensor,
    reference: torch.Tensor,
    num_classes: int,
    valid: torch.Tensor | None = None,
) -> ClassStatistics:
    """Counts for two label maps ``(B, N)`` (int64 in ``[0, C)``): ``I`` = true positives,
    ``P`` = TP + FP, ``T`` = TP + FN, per class, so ``2TP / (2TP + FP + FN) = 2I / (P + T)``."""
    batch = reference.shape[0]
    dtype = torch.float64
    reference_index = flat_label_index(reference, valid, num_classes)
    prediction_index = flat_label_index(prediction, valid, num_classes)
    agree = torch.where(prediction.reshape(-1) == reference.reshape(-1), reference_index, batch * num_classes)
    return ClassStatistics(
        count_by_label(agree, batch, num_classes, dtype),
        count_by_label(prediction_index, batch, num_classes, dtype),
        count_by_label(reference_index, batch, num_classes, dtype),
        _voxel_counts(valid, reference.shape, torch.empty(0, dtype=dtype, device=reference.device)),
    )
