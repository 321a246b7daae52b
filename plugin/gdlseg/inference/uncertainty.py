"""The uncertainty score of a segmentation: the mean normalised entropy of its class probabilities over the
voxels it labels foreground, accumulated slab by slab as the sliding window finishes them (no volume kept).

For class probabilities ``p(v) = (p_0(v), …, p_{C-1}(v))`` of voxel ``v`` (summing to 1) and the voxels
``F = {v : argmax_c p_c(v) ≠ 0}`` labelled foreground,

    H(v) = −Σ_c p_c(v) · ln p_c(v)          (``0 · ln 0 = 0``)
    score = (1 / |F|) · Σ_{v ∈ F} H(v) / ln C        in [0, 1]

0: every foreground voxel certain (one class has probability 1); 1: every one uniform over the ``C``
classes. Dividing by ``ln C`` makes models with different class counts comparable. ``F`` empty: the
score is undefined (None). ``p`` is what the sliding window labels with (its module docstring): one
model's softmax of its blended logits (with TTA, of its logits averaged over the mirror images), or an
ensemble's blended mean softmax — the entropy of that mean is the predictive entropy, which also grows
where the models disagree. It is taken on the network's grid (after the preprocessing's resampling),
before any post-processing, in float32, over the scan's voxels only (never the zero padding added
around a scan smaller than the window).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

CHUNK_ELEMENTS = 2**23  # floats per temporary (32 MB): the planes whose entropy is taken at once


@dataclass(frozen=True)
class EntropyScore:
    """``score``: the module docstring's mean normalised foreground entropy, None when ``foreground_voxels``
    (``|F|``, on the network's grid) is 0."""

    score: float | None
    foreground_voxels: int


class ForegroundEntropy:
    """Accumulates ``Σ_{v ∈ F} H(v)`` and ``|F|`` over the finished slabs of the sliding window.

    Args:
        channels: ``C``, the classes (at least 2).
        axis: the flush axis (spatial index) along which slabs are finished.
        region: the scan's voxels inside the (padded) volume, one slice per spatial axis.
    """

    def __init__(self, channels: int, axis: int, region: Sequence[slice]) -> None:
        if channels < 2:
            raise ValueError(f"an entropy needs at least 2 classes, got {channels}.")
        self.log_classes = math.log(channels)
        self.axis = axis
        self.region = tuple(region)
        self.total = 0.0
        self.voxels = 0

    def add(self, sums: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor, first: int, logits: bool) -> None:
        """Add the finished planes ``first, first + 1, …`` of the flush axis: the blended window outputs ``sums``
        ``(n, C, *other axes)``, their normaliser ``weights`` ``(n, 1, *other axes)`` and ``labels``
        ``(n, *other axes)``; ``p = softmax(sums / weights)`` over ``C`` when they are ``logits``, else
        ``sums / weights``. Planes are taken :data:`CHUNK_ELEMENTS` floats at a time (bounded memory, whatever
        the class count), in the slab's own layout (PyTorch's softmax is many times slower on other layouts)."""
        inside, others = self.region[self.axis], [part for index, part in enumerate(self.region) if index != self.axis]
        start, stop = max(first, inside.start) - first, min(first + len(sums), inside.stop) - first
        step = max(1, CHUNK_ELEMENTS // max(1, sums[0].numel()))
        for begin in range(start, stop, step):
            planes = slice(begin, min(begin + step, stop))
            foreground = labels[(planes, *others)] != 0
            if not bool(foreground.any()):
                continue
            values = sums[(planes, slice(None), *others)] / weights[(planes, slice(None), *others)]
            if logits:
                log_p = torch.log_softmax(values, dim=1)
                p = log_p.exp()
            else:  # probabilities already; p = 0 gives 0 · ln(tiny) = 0
                p, log_p = values, values.clamp_min(torch.finfo(values.dtype).tiny).log()
            entropy = (p * log_p).sum(dim=1).neg_()  # (planes, *other axes)
            self.total += float((entropy * foreground).sum(dtype=torch.float64))
            self.voxels += int(foreground.sum())

    def result(self) -> EntropyScore:
        if not self.voxels:
            return EntropyScore(None, 0)
        return EntropyScore(self.total / self.voxels / self.log_classes, self.voxels)
