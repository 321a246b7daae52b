"""An explicit memory model of one training step, so that a plan never picks a patch that does not fit.

The memory a SegResNet training step needs, on a CPU (RAM) or a GPU (device memory), is modelled as

    bytes = patches · voxels · activation_bytes_per_voxel · element_bytes / 4 · SAFETY
            + parameters · 4 bytes · 4            (weights, gradients, AdamW's two moments)
            + fixed                               (CUDA context and cuDNN workspace: FIXED_BYTES by device)

``activation_bytes_per_voxel`` is measured, not guessed: one float32 forward pass of the network on a
small probe patch in training mode, with a hook on every leaf module adding up the bytes of its output
(what autograd keeps for the backward pass: convolution inputs, normalisation and activation
outputs), divided by the probe's voxels. The network is fully convolutional, so that figure scales
linearly with the patch's voxels. ``element_bytes`` is 2 under mixed precision (most activations in
fp16/bf16) and 4 in float32. ``SAFETY`` (1.5) covers what the hooks do not see: the gradient buffers
of the backward pass (one activation-sized tensor at a time) and the allocator's fragmentation.
``tests/engines/test_memory.py`` checks the model against the peak resident memory a real CPU
training step adds.

The budget of a device (:func:`device_budget_bytes`): a GPU's total memory × 0.85; a CPU's available
RAM × 0.5 (the rest is left to the cached dataset, the data-loader workers and the evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SAFETY = 1.5
OPTIMIZER_COPIES = 4  # weights, gradients, AdamW's exp_avg and exp_avg_sq
FIXED_BYTES = {"cpu": 0, "cuda": 1_000_000_000}
BUDGET_FRACTION = {"cpu": 0.5, "cuda": 0.85}
PROBE_SIZE = 32


def activation_bytes_per_voxel(network: torch.nn.Module, in_channels: int, probe_size: int = PROBE_SIZE) -> float:
    """Float32 bytes of the leaf-module outputs of one training-mode forward pass, per input voxel.

    Runs ``network`` (on the CPU, under ``no_grad``: the outputs' sizes are the same) on a
    ``(1, in_channels, probe_size³)`` zero patch; ``probe_size`` must be a multiple of the network's
    downsampling factor. The network's training mode is restored afterwards.
    """
    total = 0

    def count(_module: torch.nn.Module, _inputs: tuple, output: torch.Tensor | Sequence[torch.Tensor]) -> None:
        nonlocal total
        outputs = output if isinstance(output, (list, tuple)) else [output]
        total += sum(item.numel() * 4 for item in outputs if isinstance(item, torch.Tensor))

    leaves = [module for module in network.modules() if not list(module.children())]
    handles = [leaf.register_forward_hook(count) for leaf in leaves]
    was_training = network.training
    device = next(network.parameters()).device
    try:
        network.train()
        with torch.no_grad():
            network(torch.zeros(1, in_channels, probe_size, probe_size, probe_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        network.train(was_training)
    return total / probe_size**3


def training_step_bytes(
    patch: Sequence[int],
    patches_per_step: int,
    per_voxel: float,
    parameters: int,
    device_type: str,
    mixed_precision: bool,
) -> int:
    """The modelled memory of one training step (see the module docstring), in bytes."""
    voxels = math.prod(int(size) for size in patch)
    element_scale = 0.5 if mixed_precision else 1.0
    activations = patches_per_step * voxels * per_voxel * element_scale * SAFETY
    return int(activations + parameters * 4 * OPTIMIZER_COPIES + FIXED_BYTES.get(device_type, 0))


def device_budget_bytes(device_type: str, memory_gb: float | None = None) -> int:
    """What a training step may use: ``memory_gb`` × the device's fraction when given (the memory of the
    machine the plan is for), else this machine's GPU memory or available RAM × that fraction.

    Raises:
        ValueError: ``memory_gb`` is not a positive number; a ``cuda`` plan without ``memory_gb`` on a
            machine without CUDA.
    """
    fraction = BUDGET_FRACTION.get(device_type, BUDGET_FRACTION["cuda"])
    if memory_gb is not None:
        if not (math.isfinite(memory_gb) and memory_gb > 0):
            raise ValueError(f"memory_gb must be a positive number of GiB, got {memory_gb!r}.")
        return int(memory_gb * 2**30 * fraction)
    if device_type == "cpu":
        import psutil

        return int(psutil.virtual_memory().available * fraction)
    if not torch.cuda.is_available():
        raise ValueError(f"device {device_type!r}: this machine has no CUDA device; give the GPU's memory (memory_gb).")
    return int(torch.cuda.get_device_properties(0).total_memory * fraction)
