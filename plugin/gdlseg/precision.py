"""Which floating-point precision a device runs fastest, for training and for inference.

One rule serves both: on CUDA, bf16 where the GPU supports it, else fp16; on a CPU, bf16 where the CPU
has native bf16 arithmetic (AVX512-BF16 or AMX), else float32. Emulated bf16 costs more than float32
(``results/bench_learning_variants.md``: 2.2× slower per step on a CPU without it, 1.5× faster with it).
"""

from __future__ import annotations

import torch

from gdlseg.settings import switch

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), as torch reports it."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype:
    """The autocast dtype ``precision`` (one of :data:`PRECISIONS`) means on ``device``; ``"auto"``: the
    fastest one that is native there (float32 where none is)."""
    if precision != "auto":
        return getattr(torch, precision)
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def training_precision(amp: bool | str, device: torch.device | str) -> str:
    """The precision a training runs at, from the bundle's ``amp`` setting: ``auto`` (the default) is
    :func:`resolve_precision`'s fastest native one; true forces mixed precision (fp16 under MONAI's
    gradient scaler on CUDA, bf16 on a CPU, native or not); false is float32.

    Raises:
        ValueError: ``amp`` neither ``auto`` nor a true/false spelling.
    """
    device = torch.device(device)
    if str(amp).strip().lower() == "auto":
        if device.type == "cuda":
            return "float16"
        return str(resolve_precision("auto", device)).removeprefix("torch.")
    if not switch(amp, "amp"):
        return "float32"
    return "float16" if device.type == "cuda" else "bfloat16"
