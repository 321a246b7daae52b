"""Class weights of the generalized Dice loss (Sudre et al. 2017) with user class weights on top.

    w_c = α_c · g(V_c),   g(V) = 1/V² ("square"), 1/V ("simple"), 1 ("uniform")

``V_c`` is the target volume of class c over the valid voxels of a row (a sample, or the whole
batch), ``α_c`` the user's class weight (1 by default, 0 for channels that are not scored).
A class absent from the row (``g`` infinite) takes the largest finite ``g`` of that row, as in
MONAI; if every scored class is absent, every weight is 0. With ``normalize`` the weights of a
row are divided by their sum, so they are scale free: the loss's smoothing terms then stay
negligible on every patch size instead of rivalling ``Σ w·(P + T)`` (~1e-5 for square weights on a
96³ patch without normalisation).

With ``max_ratio = R`` every scored class with ``α_c > 0`` gets at least ``max_c w_c / R`` in its
row (applied before normalisation): square weights of a large organ next to a tiny lesion differ by
~10⁴–10⁵, which takes the organ out of the loss altogether; the cap keeps it in, at 1/R of the
smallest class's say. ``R = 1`` gives every such class the same weight; ``None`` (default) is
Sudre's GDL.

Weights are computed without autograd and without in-place edits of any tensor autograd needs.
"""

from __future__ import annotations

import torch

W_TYPES = ("square", "simple", "uniform")


def volume_weights(volumes: torch.Tensor, w_type: str) -> torch.Tensor:
    """``g(V)`` elementwise; infinite where ``g`` overflows (V = 0, or a tiny soft volume)."""
    if w_type == "square":
        return torch.reciprocal(volumes * volumes)
    if w_type == "simple":
        return torch.reciprocal(volumes)
    return torch.ones_like(volumes)


def check_max_ratio(max_ratio: float | None) -> float | None:
    """``max_ratio`` as a float, or None.

    Raises:
        ValueError: ``max_ratio`` is not a finite number >= 1.
    """
    if max_ratio is None:
        return None
    value = float(max_ratio)
    if not (value >= 1.0 and value != float("inf")):
        raise ValueError(f"max_weight_ratio must be a finite number >= 1 (or None for no cap), got {max_ratio!r}.")
    return value


@torch.no_grad()
def generalized_dice_weights(
    volumes: torch.Tensor,
    w_type: str,
    class_weights: torch.Tensor,
    scored: torch.Tensor,
    normalize: bool,
    max_ratio: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(R, C)`` for target volumes ``(R, C)``.

    Args:
        volumes: target volume per row and class (detached inside).
        w_type: "square", "simple" or "uniform".
        class_weights: ``(C,)`` α, the user's class weights (ones by default).
        scored: ``(C,)`` bool, the channels the loss scores; the others get weight 0.
        normalize: divide each row by its sum.
        max_ratio: largest allowed ratio between two non-zero weights of a row; ``None``: no cap.

    Returns:
        ``(weights, empty)``: ``empty`` is a bool ``(R, 1)`` marking rows where every scored class is
        absent (all weights 0).
    """
    g = volume_weights(volumes.detach(), w_type)
    absent = torch.isinf(g)
    finite = torch.where(absent | ~scored, torch.zeros_like(g), g)
    largest_finite = finite.amax(dim=1, keepdim=True)
    g = torch.where(absent, largest_finite, g)
    weights = torch.where(scored, class_weights.to(g.dtype) * g, torch.zeros_like(g))
    empty = (absent | ~scored).all(dim=1, keepdim=True)
    if max_ratio is not None:
        floor = weights.amax(dim=1, keepdim=True) / max_ratio
        capped = scored & (class_weights > 0)
        weights = torch.where(capped, torch.maximum(weights, floor), weights)
    if normalize:
        total = weights.sum(dim=1, keepdim=True)
        weights = weights / torch.where(total > 0, total, torch.ones_like(total))
    return weights, empty
