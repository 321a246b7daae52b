"""MLflow params: nested settings flattened to strings, and the settings of the objects a training builds.

The ``*_hyperparameters`` readers take the loss, network, optimizer and learning-rate schedule as
built (so command-line overrides show), and keep only the values that read well as params.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

MAX_PARAM_LENGTH = 6000


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` → ``{"a.b": "1", "c": "[1, 2]"}`` (MLflow params are strings)."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            if isinstance(value, torch.Tensor):
                value = value.tolist()
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def module_hyperparameters(module: torch.nn.Module, recurse: bool = True) -> dict[str, Any]:
    """A module's class and public settings (simple-valued attributes and buffers); with ``recurse``,
    its children's too (a compound loss's parts). A network is logged with ``recurse=False``: its
    constructor arguments, not every layer's."""
    values = _class_and_settings(module, skip={"training"})
    if recurse:
        for name, child in module.named_children():
            values[name] = module_hyperparameters(child)
    for name, buffer in module.named_buffers(recurse=False):
        values[name] = buffer.tolist() if buffer is not None else None
    return values


def optimizer_hyperparameters(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's class and its constructor settings (``lr``, ``weight_decay``, ``betas``, ...) as
    built, not as a learning-rate schedule has since changed them."""
    values: dict[str, Any] = {"class": _class_path(optimizer)}
    values.update({key: value for key, value in optimizer.defaults.items() if _is_simple(value)})
    return values


def scheduler_hyperparameters(scheduler: Any) -> dict[str, Any]:
    """A learning-rate scheduler's class and public settings (``warmup_steps``, ``t_total``, ...),
    without its position (``last_epoch``), which resuming changes."""
    return _class_and_settings(scheduler, skip={"last_epoch", "verbose"})


def _class_and_settings(component: Any, skip: set[str]) -> dict[str, Any]:
    values: dict[str, Any] = {"class": _class_path(component)}
    for key, value in vars(component).items():
        if not key.startswith("_") and key not in skip and _is_simple(value):
            values[key] = value
    return values


def _class_path(component: Any) -> str:
    return f"{type(component).__module__}.{type(component).__qualname__}"


def _is_simple(value: Any) -> bool:
    """None, a number, a string, or a list/tuple/dict made of them (what reads well as a param)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_simple(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_simple(item) for key, item in value.items())
    return False
