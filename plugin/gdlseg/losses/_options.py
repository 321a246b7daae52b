"""Validation of loss arguments: each check names the argument, the rule and the value received."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence

import torch


def choose_option(argument: str, value: str, options: Sequence[str]) -> str:
    """Return ``value`` lower-cased if it is one of ``options`` (case-insensitive; a ``str`` enum such
    as MONAI's ``LossReduction`` counts as its string); otherwise raise with a "did you mean" hint.

    Anything that is not a string (``None`` included) is refused rather than turned into one:
    ``str(None)`` would silently select an option named "none".

    Raises:
        ValueError: ``value`` is not a string in ``options``; the message names ``argument``, the
            allowed values and the value received.
    """
    chosen = str.lower(value) if isinstance(value, str) else None
    if chosen in options:
        return chosen
    hint = ""
    if chosen is not None:
        close = difflib.get_close_matches(chosen, list(options), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{argument} must be one of {list(options)}, got {value!r}.{hint}")


def non_negative_float(argument: str, value: float) -> float:
    """Return ``value`` as a float, requiring a finite number >= 0.

    Raises:
        ValueError: the value is negative, NaN or infinite.
    """
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{argument} must be a finite number >= 0, got {value!r}.")
    return number


def check_tversky_weights(false_positive_weight: float, false_negative_weight: float) -> tuple[float, float]:
    """Return the Tversky weights (α of false positives, β of false negatives) as floats.

    Raises:
        ValueError: either is negative or not finite, or both are 0 (the index would be 1 whatever the
            prediction: a constant loss).
    """
    alpha = non_negative_float("tversky_alpha", false_positive_weight)
    beta = non_negative_float("tversky_beta", false_negative_weight)
    if alpha == 0 and beta == 0:
        raise ValueError("tversky_alpha and tversky_beta are both 0: the loss would be constant; ½ and ½ is the Dice.")
    return alpha, beta


def positive_float(argument: str, value: float) -> float:
    """Return ``value`` as a float, requiring a finite number > 0.

    Raises:
        ValueError: the value is 0, negative, NaN or infinite.
    """
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{argument} must be a finite number > 0, got {value!r}.")
    return number


def class_weight_tensor(class_weights: Sequence[float] | torch.Tensor | None) -> torch.Tensor | None:
    """Parse user class weights into a 1-D float tensor (one entry per input channel).

    Raises:
        ValueError: the weights are not a flat sequence, are empty, or hold a negative, NaN or
            infinite entry (the message names the index and the value).
    """
    if class_weights is None:
        return None
    try:
        weights = torch.as_tensor(class_weights, dtype=torch.float64).detach().clone()
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"class_weights must be a sequence of numbers, got {class_weights!r}.") from error
    if weights.ndim != 1 or weights.numel() == 0:
        raise ValueError(
            f"class_weights must be a flat, non-empty sequence with one number per input channel "
            f"(background included), got shape {tuple(weights.shape)}."
        )
    for index, weight in enumerate(weights.tolist()):
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"class_weights[{index}] = {weight!r}: every class weight must be a finite number >= 0.")
    return weights.to(torch.float32)


def check_class_weight_count(class_weights: torch.Tensor | None, num_channels: int) -> None:
    """Require one class weight per input channel.

    Raises:
        ValueError: the counts differ.
    """
    if class_weights is not None and class_weights.numel() != num_channels:
        raise ValueError(
            f"class_weights has {class_weights.numel()} entries but the input has {num_channels} channels: "
            f"give one weight per input channel, background included (even with include_background=False)."
        )


def check_activation(sigmoid: bool, softmax: bool, other_act: Callable | None) -> None:
    """Raise ValueError unless at most one activation is chosen and ``other_act`` is callable."""
    if other_act is not None and not callable(other_act):
        raise ValueError(f"other_act must be callable or None, got {type(other_act).__name__}.")
    if int(bool(sigmoid)) + int(bool(softmax)) + int(other_act is not None) > 1:
        raise ValueError("Choose at most one activation: sigmoid=True, softmax=True or other_act.")


def check_ignore_index(ignore_index: int | None) -> int | None:
    """Return ``ignore_index`` as an int (or None); raise ValueError for anything else."""
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or int(ignore_index) != ignore_index:
        raise ValueError(f"ignore_index must be an integer or None, got {ignore_index!r}.")
    return int(ignore_index)


def autocast_disabled(tensor: torch.Tensor) -> torch.autocast:
    """A context that runs the loss in full precision even inside ``torch.autocast``."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)
