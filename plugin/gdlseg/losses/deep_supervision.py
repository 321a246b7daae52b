"""Deep supervision: one loss applied at every output scale of a network such as MONAI's ``SegResNetDS``.

For outputs ``y_0`` (full resolution), ``y_1`` (half), …, ``y_{S-1}`` and a target ``t``:

    L = Σ_s w_s · loss(y_s, t↓s),    w_s = r^s / Σ_k r^k    (r = ``scale_weight``, ½ by default)

so the weights halve per scale and sum to 1: the value is on the scale of the wrapped loss, and a
network with one output (or in eval mode, where ``SegResNetDS`` returns one tensor) gets exactly the
wrapped loss. ``t↓s`` is the target resampled to ``y_s``'s grid by nearest neighbour, each coarse voxel reading the
fine voxel at the centre of its block (``nearest-exact``: index ``floor((i + ½)·f)``): label values,
``ignore_index`` voxels and one-hot vectors stay what they are, never blended. Each scale goes through
the wrapped loss's own path, so its memory-lean statistics (and any class weights, ``ignore_index`` or
CE term) apply at every scale; a coarser scale costs 1/8 of the one above.

Edge cases: an empty list of outputs is refused; outputs in a list or tuple must all be 5D (or 4D)
tensors with the target's batch size; the target's channel dimension is kept (label map or one-hot).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional


class DeepSupervisionLoss(nn.Module):
    """``loss`` averaged over the scales of a deep-supervision network, weights ``r^s`` normalised.

    Args:
        loss: any loss ``(logits (B, C, *spatial), target (B, 1 or C, *spatial)) → scalar``.
        scale_weight: ``r``, the weight ratio between one scale and the next finer one, in (0, 1].

    Raises:
        ValueError: ``scale_weight`` outside (0, 1].
    """

    def __init__(self, loss: nn.Module, *, scale_weight: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < float(scale_weight) <= 1.0:
            raise ValueError(f"scale_weight must be in (0, 1], got {scale_weight!r}.")
        self.loss = loss
        self.scale_weight = float(scale_weight)

    def scale_weights(self, scales: int) -> list[float]:
        """``[w_0, …, w_{S-1}]``: ``r^s`` normalised to sum 1."""
        raw = [self.scale_weight**scale for scale in range(scales)]
        total = sum(raw)
        return [weight / total for weight in raw]

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        outputs = list(outputs)
        if not outputs:
            raise ValueError("deep supervision: the network returned no output.")
        total = None
        for weight, output in zip(self.scale_weights(len(outputs)), outputs):
            term = weight * self.loss(output, resample_nearest(target, output.shape[2:]))
            total = term if total is None else total + term
        return total


def resample_nearest(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``target`` ``(B, K, *spatial)`` on a grid of ``size`` by nearest neighbour, dtype kept.

    Integer label maps go through float32, exact for labels below 2^24."""
    if tuple(target.shape[2:]) == tuple(size):
        return target
    resampled = functional.interpolate(target.float(), size=tuple(int(s) for s in size), mode="nearest-exact")
    return resampled.to(target.dtype)
