"""Reading MONAI engine outputs."""

from __future__ import annotations

from typing import Any


def iteration_loss(output: Any) -> float:
    """The loss of a MONAI trainer iteration (its output is decollated into a list of dicts)."""
    from monai.handlers import from_engine

    value = from_engine(["loss"], first=True)(output)
    if isinstance(value, (list, tuple)):
        value = value[0]
    return float(value.detach()) if hasattr(value, "detach") else float(value)
