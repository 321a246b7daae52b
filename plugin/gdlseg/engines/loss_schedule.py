"""Change a loss weight linearly over training, e.g. the cross-entropy share of GDL + CE.

At iteration ``i`` (1-based) of ``N = max_epochs × epoch_length`` the attribute is set to

    value(i) = start + (end − start) · (i − 1) / (N − 1)        (``start`` when N = 1)

before the iteration's forward pass. The value depends only on the iteration counter, so a resumed
training (Ignite restores ``iteration``) and every DDP rank use the same value as an uninterrupted
single-process run. The idea, tested by ``scripts/bench_imbalance.py``: a small CE share early leaves
the square-weighted GDL free to find tiny structures, a larger share later brings the large ones back.
"""

from __future__ import annotations

from collections.abc import Sequence

from ignite.engine import Engine, Events
from torch import nn

from gdlseg.losses._options import non_negative_float


def weight_range(value: float | Sequence[float], name: str = "weight") -> tuple[float, float]:
    """``(start, end)`` of a weight given as a number (constant) or as ``[start, end]``.

    Raises:
        ValueError: not a number or a pair, or a value negative or not finite (``name`` is named).
    """
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise ValueError(f"{name} must be a number or [start, end], got {value!r}.")
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or [start, end], got {value!r}.") from None
    start, end = (non_negative_float(f"{name} values", number) for number in numbers)
    return start, end


class LinearLossWeightSchedule:
    """Set ``loss.<attribute>`` from ``start`` to ``end`` linearly over the engine's iterations.

    Args:
        loss: the loss module whose weight changes (e.g. :class:`gdlseg.losses.GeneralizedDiceCELoss`).
        attribute: the weight's attribute name (``"lambda_ce"``); it must exist on ``loss``.
        values: a number (constant) or ``[start, end]``, values >= 0.

    Raises:
        ValueError: the attribute does not exist, or bad values (see :func:`weight_range`).
    """

    def __init__(self, loss: nn.Module, attribute: str, values: float | Sequence[float]) -> None:
        if not hasattr(loss, attribute):
            raise ValueError(f"{type(loss).__name__} has no attribute {attribute!r} to schedule.")
        self.loss, self.attribute = loss, attribute
        self.start, self.end = weight_range(values, attribute)

    def value_at(self, iteration: int, total: int) -> float:
        """The weight at 1-based ``iteration`` of ``total``."""
        if total <= 1:
            return self.start
        progress = min(max((iteration - 1) / (total - 1), 0.0), 1.0)
        return self.start + (self.end - self.start) * progress

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        state = engine.state
        total = (state.max_epochs or 1) * (state.epoch_length or 1)
        setattr(self.loss, self.attribute, self.value_at(state.iteration, total))
