"""bf16 autocast for training and validation on a CPU, which MONAI's engines do not offer.

MONAI's ``SupervisedTrainer``/``SupervisedEvaluator`` autocast on CUDA only (``amp=True``, with a gradient
scaler). :class:`CpuAutocastInferer` wraps the engine's inferer instead of the network, so the weights,
their state-dict names and the checkpoints are those of a float32 training: only the forward pass runs
under ``torch.autocast("cpu", bfloat16)``. Its outputs come back in float32, so the loss, the metrics and
the backward pass through the loss stay in float32 (autocast's own rule: backward outside the context).
bf16 keeps float32's exponent range, so no gradient scaler is needed.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer


class CpuAutocastInferer(Inferer):
    """Runs ``inferer`` under CPU autocast to ``precision`` when the inputs are on a CPU and ``precision``
    is ``bfloat16``; otherwise (float32, or CUDA, where MONAI's ``amp`` does the work) it passes through.

    Args:
        inferer: the inferer to wrap (``SimpleInferer`` for training, ``SlidingWindowInferer`` for
            validation).
        precision: ``float32``, ``bfloat16`` or ``float16`` (as ``gdlseg.precision.training_precision``
            resolves the bundle's ``amp``); float16 on a CPU is refused (slower than float32 there).

    Raises:
        ValueError: an unknown precision, or float16 for CPU inputs.
    """

    def __init__(self, inferer: Inferer, precision: str) -> None:
        if precision not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"precision must be float32, bfloat16 or float16; got {precision!r}.")
        self.inferer = inferer
        self.precision = precision

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        if inputs.device.type != "cpu" or self.precision == "float32":
            return self.inferer(inputs, network, *args, **kwargs)
        if self.precision == "float16":
            raise ValueError("precision float16 is for CUDA; on a CPU use bfloat16 or float32 (amp true/false).")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = self.inferer(inputs, network, *args, **kwargs)
        return _to_float32(outputs)


def _to_float32(outputs: Any) -> Any:
    """Floating tensors in ``outputs`` (a tensor, or a list/tuple of them: deep supervision) as float32."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(_to_float32(output) for output in outputs)
    return outputs
