"""From a loss's ``(input, target)`` to per-class statistics: activation, target form, ignore mask.

Shape policy (MONAI's): ``input`` is ``(B, C, *spatial)`` with 1–3 spatial dims; ``target`` is a
label map ``(B, 1, *spatial)`` when ``to_onehot_y`` is set (and C > 1), otherwise a dense
``(B, C, *spatial)`` one-hot or soft target. With C = 1, ``softmax`` and ``to_onehot_y`` are ignored
with a warning, as in MONAI.

``ignore_index`` follows MONAI's ``create_ignore_mask`` convention: in a label map, and in any
one-channel target (a binary mask, e.g. 0/1 with 255 for unlabelled voxels), voxels holding that
value are ignored; in a dense target of C > 1 channels, an index inside ``[0, C)`` ignores the
voxels where that channel is on (and the channel itself is not scored), a sentinel outside it
ignores voxels whose channels are all zero.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from gdlseg.losses.cross_entropy import cross_entropy_sum
from gdlseg.losses.statistics import (
    ClassStatistics,
    LossTarget,
    compute_dtype,
    dense_target_statistics,
    label_map_statistics,
    reduce_over_batch,
    softmax_label_map_statistics,
)


def plain_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Drop tensor subclasses (MONAI's MetaTensor) so the loss runs on plain, fast torch ops."""
    return tensor if type(tensor) is torch.Tensor else tensor.as_subclass(torch.Tensor)


def check_shapes(input: torch.Tensor, target: torch.Tensor) -> None:
    """Require ``(B, C, *spatial)`` inputs and a target with the same batch and spatial sizes.

    Raises:
        ValueError: naming both shapes.
    """
    if input.ndim < 3:
        raise ValueError(f"input must have shape (B, C, *spatial) with 1-3 spatial dims, got {tuple(input.shape)}.")
    if not input.is_floating_point():
        raise ValueError(f"input must be a floating-point tensor, got dtype {input.dtype}.")
    if target.ndim != input.ndim or target.shape[0] != input.shape[0] or target.shape[2:] != input.shape[2:]:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match input shape {tuple(input.shape)}: expected "
            f"(B, 1, *spatial) for a label map or (B, C, *spatial) for a one-hot target, "
            f"with the same B and spatial size."
        )


def _check_label_values(
    values: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None, num_classes: int, ignore_index
) -> None:
    """``values``: the label map as given; ``labels``: its int64 cast, 0 at ignored voxels.
    One fused check (a single host sync); the slow search for the culprit runs only on failure."""
    low, high = torch.aminmax(labels)
    invalid = (low < 0) | (high >= num_classes)
    if values.is_floating_point():  # non-integer labels (ignore_index is an integer)
        invalid |= torch.frac(values).any()
    if not bool(invalid):
        return
    checked = values if valid is None else values[valid]
    wrong = (checked < 0) | (checked >= num_classes) | (checked != torch.round(checked))
    value = checked[wrong][0].item()
    ignore = "" if ignore_index is None else f" or ignore_index={ignore_index}"
    raise ValueError(
        f"target label map holds the value {value:g}, but labels must be integers in [0, {num_classes}) "
        f"for an input with {num_classes} channels{ignore}."
    )


def parse_target(
    target: torch.Tensor,
    num_channels: int,
    to_onehot_y: bool,
    ignore_index: int | None,
    validate_labels: bool = True,
    soft_label: bool = False,
) -> LossTarget:
    """Flatten a target and derive its ignore mask (see the module docstring for the forms).

    Args:
        target: ``(B, 1 or C, *spatial)``, already shape-checked against the input.
        num_channels: C, the input's channel count.
        to_onehot_y: the target is a label map to be compared class by class.
        ignore_index: label value (or one-hot channel / sentinel) to ignore, or None.
        validate_labels: check that label values are integers in ``[0, C)`` (or ``ignore_index``), and
            that a one-channel mask with an ``ignore_index`` holds only 0, 1 and ``ignore_index``.
            This costs one device-to-host synchronisation per call on GPU.
        soft_label: a one-channel mask may hold any value in [0, 1] (soft targets).

    Raises:
        ValueError: a label outside ``[0, C)``, a non-integer label, a one-channel mask value other than
            0, 1 (or [0, 1] with ``soft_label``) and ``ignore_index``, or a channel count mismatch.
    """
    target = plain_tensor(target)
    batch = target.shape[0]
    is_label_map = to_onehot_y and num_channels > 1
    if to_onehot_y and num_channels == 1:
        warnings.warn("single channel prediction, `to_onehot_y=True` ignored.", stacklevel=3)
    if is_label_map:
        if target.shape[1] != 1:
            raise ValueError(
                f"to_onehot_y=True expects a label map of shape (B, 1, *spatial), got {tuple(target.shape)}."
            )
        values = target.detach().reshape(batch, -1)
        valid = None if ignore_index is None else values != ignore_index
        labels = values.long() if valid is None else torch.where(valid, values, 0).long()
        if validate_labels:
            _check_label_values(values, labels, valid, num_channels, ignore_index)
        return LossTarget(labels, None, valid)
    if target.shape[1] != num_channels:
        raise ValueError(
            f"target has {target.shape[1]} channels but the input has {num_channels}: pass a one-hot target "
            f"with one channel per class, or a label map (B, 1, *spatial) with to_onehot_y=True."
        )
    dense = target.reshape(batch, num_channels, -1)
    if ignore_index is None:
        return LossTarget(None, dense, None)
    if num_channels == 1:
        return _single_channel_target(dense, ignore_index, soft_label, validate_labels)
    with torch.no_grad():
        if 0 <= ignore_index < num_channels:
            valid = dense[:, ignore_index] < 0.5
        else:
            valid = dense.sum(dim=1) > 0
    return LossTarget(None, dense, valid)


def _single_channel_target(
    dense: torch.Tensor, ignore_index: int, soft_label: bool, validate_labels: bool
) -> LossTarget:
    """A ``(B, 1, N)`` target with an ``ignore_index`` is a mask (MONAI's ``create_ignore_mask``):
    voxels equal to ``ignore_index`` are ignored (and set to 0), every other voxel must be 0 or 1
    (any value in [0, 1] with ``soft_label``).

    Raises:
        ValueError: a value that is neither a mask value nor ``ignore_index`` (with ``validate_labels``).
    """
    with torch.no_grad():
        valid = dense[:, 0] != ignore_index
        if validate_labels:
            kept = dense[:, 0]
            wrong = valid & ((kept < 0) | (kept > 1))
            if not soft_label:
                wrong |= valid & (kept != 0) & (kept != 1)
            if bool(wrong.any()):
                allowed = "a value in [0, 1]" if soft_label else "0 or 1"
                raise ValueError(
                    f"single-channel target holds the value {kept[wrong][0].item():g}: with ignore_index="
                    f"{ignore_index} a one-channel target is a mask, each voxel {allowed} or ignore_index."
                )
    return LossTarget(None, torch.where(valid.unsqueeze(1), dense, torch.zeros_like(dense)), valid)


def activate(input: torch.Tensor, sigmoid: bool, softmax: bool, other_act: Callable | None) -> torch.Tensor:
    """Apply the loss's activation in the compute dtype (MONAI order: sigmoid, softmax, other_act)."""
    probabilities = input.to(compute_dtype(input.dtype))
    if sigmoid:
        probabilities = torch.sigmoid(probabilities)
    if softmax and input.shape[1] > 1:
        probabilities = torch.softmax(probabilities, dim=1)
    if other_act is not None:
        probabilities = other_act(probabilities)
    return probabilities


def class_statistics(
    input: torch.Tensor,
    target: LossTarget,
    sigmoid: bool = False,
    softmax: bool = False,
    other_act: Callable | None = None,
    squared_pred: bool = False,
    soft_label: bool = False,
    batch: bool = False,
    with_cross_entropy: bool = False,
    cross_entropy_weights: torch.Tensor | None = None,
) -> ClassStatistics:
    """Per-class statistics of an activated input against a parsed target.

    Softmax on a label map takes the fused, memory-lean path; everything else runs through
    ordinary autograd on the activated input. ``batch`` sums the statistics over the batch.
    ``with_cross_entropy`` adds the cross-entropy sum of the raw ``input`` (softmax, or binary with
    ``sigmoid``) weighted by ``cross_entropy_weights`` ``(C,)`` (None: all ones).
    """
    if softmax and input.shape[1] == 1:
        warnings.warn("single channel prediction, `softmax=True` ignored.", stacklevel=3)
    flat = plain_tensor(input).reshape(input.shape[0], input.shape[1], -1)
    fused = softmax and not sigmoid and other_act is None and target.labels is not None
    if fused:
        statistics = softmax_label_map_statistics(
            flat, target.labels, target.valid, squared_pred, with_cross_entropy, cross_entropy_weights
        )
    else:
        probabilities = activate(flat, sigmoid, softmax, other_act)
        if target.labels is not None:
            statistics = label_map_statistics(probabilities, target.labels, target.valid, squared_pred, soft_label)
        else:
            dense = target.dense.to(probabilities.dtype)
            statistics = dense_target_statistics(probabilities, dense, target.valid, squared_pred, soft_label)
        if with_cross_entropy:
            dtype = probabilities.dtype
            weights = torch.ones(flat.shape[1], dtype=dtype, device=flat.device)
            if cross_entropy_weights is not None:
                weights = cross_entropy_weights.to(device=flat.device, dtype=dtype)
            statistics = statistics._replace(cross_entropy=cross_entropy_sum(flat.to(dtype), target, weights, sigmoid))
    return reduce_over_batch(statistics) if batch else statistics


def scored_channels(num_channels: int, include_background: bool, ignore_index: int | None, device) -> torch.Tensor:
    """Bool ``(C,)``: the channels a loss scores (background dropped unless included, and an
    ``ignore_index`` that names a channel). With C = 1 the single channel is always scored.

    Raises:
        ValueError: no channel is left to score (C = 2, ``include_background=False`` and
            ``ignore_index=1``): the loss would be undefined.
    """
    scored = torch.ones(num_channels, dtype=torch.bool, device=device)
    if num_channels == 1:
        if not include_background:
            warnings.warn("single channel prediction, `include_background=False` ignored.", stacklevel=3)
        return scored
    dropped = set() if include_background else {0}
    if ignore_index is not None and 0 <= ignore_index < num_channels:
        dropped.add(ignore_index)
    if len(dropped) == num_channels:
        raise ValueError(
            f"no channel left to score: the input has {num_channels} channels, include_background=False "
            f"drops channel 0 and ignore_index={ignore_index} drops the other."
        )
    scored[sorted(dropped)] = False
    return scored


def check_some_class_weighted(
    class_weights: torch.Tensor | None, include_background: bool, ignore_index: int | None
) -> None:
    """Raise ValueError if every scored class has weight 0 (the loss would be constant)."""
    if class_weights is None or class_weights.numel() == 1:
        return
    scored = scored_channels(class_weights.numel(), include_background, ignore_index, class_weights.device)
    if not bool((class_weights[scored] > 0).any()):
        raise ValueError(
            f"class_weights {class_weights.tolist()} give weight 0 to every scored class "
            f"(include_background={include_background}, ignore_index={ignore_index}): the loss would be constant."
        )
